//! Parsing and validation of single settings, each failing with the one line that names it.

use super::{ConfigError, defaults};
use crate::cloud::HealthCheck;
use std::time::Duration;

pub(super) fn comma_list(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// Values that end up inside the SSM shell script must not be able to break out of quoting.
pub(super) fn validate_shell_safe(env: &'static str, value: &str) -> Result<(), ConfigError> {
    let ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            env,
            value: value.to_string(),
            why: "only letters, digits and - _ . / : @ are allowed".into(),
        })
    }
}

/// The health path goes into the start-container script and a curl URL: a path of plain
/// characters only (the script checks the same rule).
pub(super) fn validate_health_check_path(path: &str) -> Result<(), ConfigError> {
    let ok = path.starts_with('/')
        && path.len() <= 1024
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~/%?=&+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            env: "HEALTH_CHECK_PATH",
            value: path.to_string(),
            why: "must start with / and use only letters, digits and . _ ~ / % ? = & + - \
                  (at most 1024 characters)"
                .into(),
        })
    }
}

/// The target groups' health check from its settings, within AWS's ranges, and with the timeout
/// below the interval (AWS refuses CreateTargetGroup otherwise).
pub(super) fn health_check(
    path: String,
    interval: Option<u32>,
    timeout: Option<u32>,
    healthy: Option<u32>,
    unhealthy: Option<u32>,
    codes: Option<String>,
) -> Result<HealthCheck, ConfigError> {
    let codes = codes.unwrap_or_else(|| defaults::HEALTH_CHECK_CODES.into());
    validate_health_codes(&codes)?;
    let interval_seconds = in_range(
        "HEALTH_CHECK_INTERVAL_SECONDS",
        interval.unwrap_or(defaults::HEALTH_CHECK_INTERVAL_SECONDS),
        5..=300,
        "must be from 5 to 300",
    )?;
    let timeout_seconds = in_range(
        "HEALTH_CHECK_TIMEOUT_SECONDS",
        timeout.unwrap_or(defaults::HEALTH_CHECK_TIMEOUT_SECONDS),
        2..=120,
        "must be from 2 to 120",
    )?;
    if timeout_seconds >= interval_seconds {
        return Err(ConfigError::Invalid {
            env: "HEALTH_CHECK_TIMEOUT_SECONDS",
            value: timeout_seconds.to_string(),
            why: format!(
                "must be less than HEALTH_CHECK_INTERVAL_SECONDS ({interval_seconds}); AWS refuses the target group otherwise"
            ),
        });
    }
    Ok(HealthCheck {
        interval_seconds,
        timeout_seconds,
        healthy_threshold: in_range(
            "HEALTH_CHECK_HEALTHY_THRESHOLD",
            healthy.unwrap_or(defaults::HEALTH_CHECK_HEALTHY_THRESHOLD),
            2..=10,
            "must be from 2 to 10",
        )?,
        unhealthy_threshold: in_range(
            "HEALTH_CHECK_UNHEALTHY_THRESHOLD",
            unhealthy.unwrap_or(defaults::HEALTH_CHECK_UNHEALTHY_THRESHOLD),
            2..=10,
            "must be from 2 to 10",
        )?,
        path,
        codes,
    })
}

/// `HEALTH_CHECK_CODES`: the load balancer's matcher syntax for HTTP targets, codes or ranges
/// from 200 to 499 separated by commas (`200`, `200,204`, `200-299`).
pub(super) fn validate_health_codes(codes: &str) -> Result<(), ConfigError> {
    let code = |text: &str| {
        text.parse::<u16>()
            .ok()
            .filter(|c| (200..=499).contains(c) && text.len() == 3)
    };
    let ok = !codes.is_empty()
        && codes.split(',').count() <= 10
        && codes.split(',').all(|item| match item.split_once('-') {
            Some((low, high)) => code(low).zip(code(high)).is_some_and(|(l, h)| l < h),
            None => code(item).is_some(),
        });
    if ok {
        return Ok(());
    }
    Err(ConfigError::Invalid {
        env: "HEALTH_CHECK_CODES",
        value: codes.to_string(),
        why:
            "must be HTTP codes or ranges from 200 to 499 separated by commas, e.g. 200 or 200-299"
                .into(),
    })
}

/// An SQS queue URL: `https://sqs.<region>.amazonaws.com/<account>/<name>` on AWS, or an
/// `http://` one on a local emulator. Anything else (an ARN, a bare name) is a mistake worth
/// catching at start-up rather than at the first receive.
pub(super) fn validate_queue_url(url: &str) -> Result<(), ConfigError> {
    let path = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path);
    let ok = path.is_some_and(|path| {
        let mut parts = path.split('/');
        matches!(
            (parts.next(), parts.next(), parts.next()),
            (Some(account), Some(name), None) if !account.is_empty() && !name.is_empty()
        )
    }) && !url.chars().any(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            env: "SPOTPOOL_INTERRUPTION_QUEUE_URL",
            value: url.to_string(),
            why: "expected a queue URL like https://sqs.eu-west-1.amazonaws.com/123456789012/spotpool-interruptions".into(),
        })
    }
}

/// Parses `500ms`, `10s`, `5m`, `1h` or a bare number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a duration like 500ms, 10s, 5m or 1h".to_string())?;
    let duration = match unit {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        other => return Err(format!("unknown unit {other:?}; use ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(duration)
}

/// A setting that must be present and not blank.
pub(super) fn required(
    value: &Option<String>,
    env: &'static str,
    flag: &'static str,
    what: &'static str,
) -> Result<String, ConfigError> {
    value
        .clone()
        .filter(|v| !v.trim().is_empty())
        .ok_or(ConfigError::Missing { env, flag, what })
}

/// A whole number within `range`.
pub(super) fn in_range(
    env: &'static str,
    value: u32,
    range: std::ops::RangeInclusive<u32>,
    why: &str,
) -> Result<u32, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            env,
            value: value.to_string(),
            why: why.to_string(),
        })
    }
}

/// A duration setting, or its default.
pub(super) fn duration(
    env: &'static str,
    value: &Option<String>,
    default: &str,
) -> Result<Duration, ConfigError> {
    let raw = value.clone().unwrap_or_else(|| default.to_string());
    parse_duration(&raw).map_err(|why| ConfigError::Invalid {
        env,
        value: raw.clone(),
        why,
    })
}
