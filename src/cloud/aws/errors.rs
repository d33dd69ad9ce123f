//! Calling the SDK: [`call`] awaits every SDK call of the adapter, classifies a failure with the
//! one table of AWS error codes ([`ERROR_CODES`], [`classify`]) and records the per-call metrics
//! (`spotpool_aws_calls_total`, `spotpool_aws_call_duration_seconds`). Beside it, the small
//! helpers the services share to shape errors and read responses: [`with_context`], [`redact`],
//! [`missing`], [`next_page`], [`truncate`].
//!
//! Must not: retry (the SDK has retried before `call` sees an error), or log more of a call than
//! its service, operation, outcome, error code and duration (a request may carry a secret).

use super::IN_FLIGHT;
use crate::cloud::{CloudError, CloudErrorKind, CloudResult};
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use std::cell::Cell;
use std::future::Future;
use std::time::Instant;

/// AWS error codes and their class. Codes are exact and case-sensitive: EC2's
/// `InvalidInstanceID.NotFound` and SSM's `InvalidInstanceId` are different codes.
/// A code not listed here is `Transient` if AWS answered 5xx, `Throttled` on 429, else `Fatal`.
const ERROR_CODES: &[(&str, CloudErrorKind)] = &[
    // Rate limits, left over after the SDK's retries.
    ("RequestLimitExceeded", CloudErrorKind::Throttled),
    ("Throttling", CloudErrorKind::Throttled),
    ("ThrottlingException", CloudErrorKind::Throttled),
    ("ThrottledException", CloudErrorKind::Throttled),
    ("TooManyRequestsException", CloudErrorKind::Throttled),
    ("RequestThrottled", CloudErrorKind::Throttled),
    ("RequestThrottledException", CloudErrorKind::Throttled),
    ("EC2ThrottledException", CloudErrorKind::Throttled),
    ("SlowDown", CloudErrorKind::Throttled),
    ("PriorRequestNotComplete", CloudErrorKind::Throttled),
    ("BandwidthLimitExceeded", CloudErrorKind::Throttled),
    ("TooManyUpdates", CloudErrorKind::Throttled),
    // SQS: too many messages in flight; KMS throttling the queue's encryption.
    ("OverLimit", CloudErrorKind::Throttled),
    ("KmsThrottled", CloudErrorKind::Throttled),
    // No capacity for this (instance type, zone), or a quota that says the same
    // (Karpenter's unfulfillable-capacity codes).
    ("InsufficientInstanceCapacity", CloudErrorKind::Capacity),
    ("InsufficientCapacity", CloudErrorKind::Capacity),
    ("InsufficientHostCapacity", CloudErrorKind::Capacity),
    (
        "InsufficientReservedInstanceCapacity",
        CloudErrorKind::Capacity,
    ),
    (
        "InsufficientFreeAddressesInSubnet",
        CloudErrorKind::Capacity,
    ),
    ("SpotMaxPriceTooLow", CloudErrorKind::Capacity),
    // An account quota used up: no other zone or type of the family helps, and a user waits
    // with the cause shown (`quota_exceeded`) instead of silently.
    ("MaxSpotInstanceCountExceeded", CloudErrorKind::Quota),
    ("VcpuLimitExceeded", CloudErrorKind::Quota),
    ("InstanceLimitExceeded", CloudErrorKind::Quota),
    ("TooManyLoadBalancers", CloudErrorKind::Quota),
    // A load balancer's limits (rules, target groups, targets per load balancer: that shard is
    // full) or the region's target groups (every shard is): the user waits for route capacity,
    // the claim has not failed (issue 11).
    ("TooManyRules", CloudErrorKind::RouteCapacity),
    (
        "TooManyUniqueTargetGroupsPerLoadBalancer",
        CloudErrorKind::RouteCapacity,
    ),
    ("TooManyTargets", CloudErrorKind::RouteCapacity),
    // (TooManyRegistrationsForTargetId is a limit of one instance, not of a shard: Fatal.)
    ("TooManyTargetGroups", CloudErrorKind::RouteCapacity),
    ("UnfulfillableCapacity", CloudErrorKind::Capacity),
    ("ReservationCapacityExceeded", CloudErrorKind::Capacity),
    // The instance type is not offered in this zone.
    ("Unsupported", CloudErrorKind::Capacity),
    // The resources the port manages by id, gone or never there. A malformed instance id is
    // deliberately not here: ids come from AWS, so a malformed one is a bug (Fatal).
    ("InvalidInstanceID.NotFound", CloudErrorKind::NotFound),
    ("InvalidInstanceId", CloudErrorKind::NotFound),
    ("InvocationDoesNotExist", CloudErrorKind::NotFound),
    ("InvalidCommandId", CloudErrorKind::NotFound),
    ("ResourceNotFoundException", CloudErrorKind::NotFound),
    // Service Quotas: a quota code the region does not have.
    ("NoSuchResourceException", CloudErrorKind::NotFound),
    ("TargetGroupNotFound", CloudErrorKind::NotFound),
    ("RuleNotFound", CloudErrorKind::NotFound),
    ("ListenerNotFound", CloudErrorKind::NotFound),
    ("LoadBalancerNotFound", CloudErrorKind::NotFound),
    // ECR: the container image's repository or tag.
    ("RepositoryNotFoundException", CloudErrorKind::NotFound),
    ("ImageNotFoundException", CloudErrorKind::NotFound),
    // EBS: a workspace volume or snapshot that is gone, or a detach from an instance it is not
    // attached to.
    ("InvalidVolume.NotFound", CloudErrorKind::NotFound),
    ("InvalidSnapshot.NotFound", CloudErrorKind::NotFound),
    ("InvalidAttachment.NotFound", CloudErrorKind::NotFound),
    // Collisions with existing state.
    ("PriorityInUse", CloudErrorKind::Conflict),
    ("ResourceExistsException", CloudErrorKind::Conflict),
    ("DuplicateTargetGroupName", CloudErrorKind::Conflict),
    ("ResourceInUse", CloudErrorKind::Conflict),
    ("IdempotentParameterMismatch", CloudErrorKind::Conflict),
    ("IncorrectInstanceState", CloudErrorKind::Conflict),
    // EBS: a volume attached elsewhere, or in a state that does not allow the call (attaching a
    // volume that is still detaching, say): the reconciler waits and looks again.
    ("VolumeInUse", CloudErrorKind::Conflict),
    ("IncorrectState", CloudErrorKind::Conflict),
    // EBS could not place the volume in this zone right now.
    ("InsufficientVolumeCapacity", CloudErrorKind::Transient),
    // SQS: a receipt handle that expired (the message was received again since, or is gone).
    ("ReceiptHandleIsInvalid", CloudErrorKind::NotFound),
    // Secrets Manager: the secret is scheduled for deletion (a force delete completes
    // asynchronously), so it can be neither created nor updated for a few seconds.
    ("InvalidRequestException", CloudErrorKind::Conflict),
    // AWS-side failures.
    ("InternalError", CloudErrorKind::Transient),
    ("InternalFailure", CloudErrorKind::Transient),
    ("InternalServerError", CloudErrorKind::Transient),
    ("InternalServiceError", CloudErrorKind::Transient),
    ("InternalServiceErrorException", CloudErrorKind::Transient),
    ("ServiceUnavailable", CloudErrorKind::Transient),
    ("ServiceUnavailableException", CloudErrorKind::Transient),
    ("Unavailable", CloudErrorKind::Transient),
    ("RequestTimeout", CloudErrorKind::Transient),
    ("RequestTimeoutException", CloudErrorKind::Transient),
];

/// Classifies a failed SDK call. The only place that looks at AWS error codes.
fn classify<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(context) => {
            let code = err.code().unwrap_or_default().to_string();
            let status = context.raw().status();
            let listed = ERROR_CODES
                .iter()
                .find(|(listed, _)| *listed == code)
                .map(|(_, kind)| *kind);
            let kind = match listed {
                Some(kind) => kind,
                None if status.as_u16() == 429 => CloudErrorKind::Throttled,
                None if status.is_server_error() => CloudErrorKind::Transient,
                None => CloudErrorKind::Fatal,
            };
            let message = match err.message() {
                Some(message) => message.to_string(),
                None => format!("HTTP {}: {}", status.as_u16(), DisplayErrorContext(&err)),
            };
            CloudError::new(kind, operation, code, message)
        }
        // The request could not even be built: a bug, not something time fixes.
        SdkError::ConstructionFailure(_) => CloudError::new(
            CloudErrorKind::Fatal,
            operation,
            "",
            DisplayErrorContext(&err).to_string(),
        ),
        // A 5xx whose body is not an AWS error at all (moto's page for an operation it does not
        // implement): no code, and the status first, as for a coded answer without a message.
        SdkError::ResponseError(context) if context.raw().status().is_server_error() => {
            CloudError::new(
                CloudErrorKind::Transient,
                operation,
                "",
                format!(
                    "HTTP {}: {}",
                    context.raw().status().as_u16(),
                    DisplayErrorContext(&err)
                ),
            )
        }
        // Timeouts, connection failures and unreadable responses that survived the retries.
        _ => CloudError::new(
            CloudErrorKind::Transient,
            operation,
            "",
            DisplayErrorContext(&err).to_string(),
        ),
    }
}

/// Awaits one SDK call, classifies its error and records its metrics and a debug line.
/// Not a retry wrapper: the SDK has retried already.
pub(super) async fn call<T, E>(
    service: &'static str,
    operation: &'static str,
    request: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> CloudResult<T>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let result = IN_FLIGHT
        .scope((operation, Cell::new(0)), request)
        .await
        .map_err(|err| classify(operation, err));
    let elapsed = started.elapsed();
    let outcome = match &result {
        Ok(_) => "ok",
        Err(err) => err.kind.as_str(),
    };
    metrics::counter!(
        "spotpool_aws_calls_total",
        "service" => service,
        "operation" => operation,
        "outcome" => outcome,
    )
    .increment(1);
    metrics::histogram!(
        "spotpool_aws_call_duration_seconds",
        "service" => service,
        "operation" => operation,
    )
    .record(elapsed.as_secs_f64());
    match &result {
        Ok(_) => tracing::debug!(
            service,
            operation,
            outcome,
            duration_ms = elapsed.as_millis() as u64,
            "aws call"
        ),
        Err(err) => tracing::debug!(
            service,
            operation,
            outcome,
            code = %err.code,
            duration_ms = elapsed.as_millis() as u64,
            "aws call"
        ),
    }
    result
}

/// Whether a failed call says the service cannot answer this operation at all, rather than
/// "not now": access denied (the policy lacks it), an operation the endpoint does not know, or a
/// 5xx that carries no AWS error code (AWS always sends one; moto answers an operation it does
/// not implement with a bare HTTP 500 page). A caller with a fallback uses it for a while.
pub(super) fn cannot_answer(err: &CloudError) -> bool {
    const CODES: &[&str] = &[
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "InvalidAction",
        "UnknownOperationException",
        "NotImplemented",
    ];
    CODES.contains(&err.code.as_str())
        || (err.kind == CloudErrorKind::Transient
            && err.code.is_empty()
            && err.message.starts_with("HTTP 5"))
}

/// Prefixes an error's message with what we were doing.
pub(super) fn with_context(mut err: CloudError, context: impl std::fmt::Display) -> CloudError {
    err.message = format!("{context}: {}", err.message);
    err
}

/// Removes `secret` from an error's text, in case AWS ever echoes a request field back.
pub(super) fn redact(mut err: CloudError, secret: &str) -> CloudError {
    if !secret.is_empty() {
        err.message = err.message.replace(secret, "<redacted>");
        err.code = err.code.replace(secret, "<redacted>");
    }
    err
}

/// An error for a response that lacks a field AWS always sends.
pub(super) fn missing(operation: &'static str, what: &str) -> CloudError {
    CloudError::new(
        CloudErrorKind::Transient,
        operation,
        "",
        format!("the response has no {what}"),
    )
}

/// The token of the next page, `None` after the last one. A service that hands back the token it
/// was given would make the loop endless, so that is an error.
pub(super) fn next_page(
    operation: &'static str,
    sent: Option<String>,
    received: Option<&str>,
) -> CloudResult<Option<String>> {
    match received {
        None | Some("") => Ok(None),
        Some(token) if sent.as_deref() == Some(token) => Err(CloudError::new(
            CloudErrorKind::Transient,
            operation,
            "",
            "the service returned the same page token twice",
        )),
        Some(token) => Ok(Some(token.to_string())),
    }
}

pub(super) fn truncate(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ec2::operation::describe_instances::DescribeInstancesError;
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(code: &str, status: u16) -> SdkError<DescribeInstancesError, HttpResponse> {
        let meta = ErrorMetadata::builder()
            .code(code)
            .message("something happened")
            .build();
        SdkError::service_error(
            DescribeInstancesError::generic(meta),
            HttpResponse::new(status.try_into().unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn a_denied_unknown_or_codeless_5xx_answer_cannot_answer_and_a_coded_failure_can() {
        let codeless = SdkError::<DescribeInstancesError, HttpResponse>::response_error(
            "malformed JSON error body",
            HttpResponse::new(500.try_into().unwrap(), SdkBody::from("<html>500</html>")),
        );
        let codeless = classify("DescribeInstanceInformation", codeless);
        assert_eq!(codeless.kind, CloudErrorKind::Transient);
        assert!(cannot_answer(&codeless), "{codeless}");
        for code in ["AccessDeniedException", "UnknownOperationException"] {
            let denied = classify("DescribeInstanceInformation", service_error(code, 400));
            assert!(cannot_answer(&denied), "{code}");
        }
        for (code, status) in [("InternalServerError", 500), ("ThrottlingException", 400)] {
            let err = classify("DescribeInstanceInformation", service_error(code, status));
            assert!(!cannot_answer(&err), "{code}");
        }
    }

    #[test]
    fn every_listed_code_gets_its_class() {
        for (code, kind) in ERROR_CODES {
            let err = classify("DescribeInstances", service_error(code, 400));
            assert_eq!(err.kind, *kind, "code {code}");
            assert_eq!(err.code, *code);
            assert_eq!(err.operation, "DescribeInstances");
        }
    }

    #[test]
    fn the_documented_codes_are_classified_as_the_contract_says() {
        use CloudErrorKind::*;
        let cases = [
            ("RequestLimitExceeded", Throttled),
            ("Throttling", Throttled),
            ("ThrottlingException", Throttled),
            ("TooManyRequestsException", Throttled),
            ("InsufficientInstanceCapacity", Capacity),
            ("InsufficientCapacity", Capacity),
            ("SpotMaxPriceTooLow", Capacity),
            ("MaxSpotInstanceCountExceeded", Quota),
            ("VcpuLimitExceeded", Quota),
            ("TooManyTargetGroups", RouteCapacity),
            ("TooManyRules", RouteCapacity),
            ("TooManyUniqueTargetGroupsPerLoadBalancer", RouteCapacity),
            ("TooManyTargets", RouteCapacity),
            ("NoSuchResourceException", NotFound),
            ("InsufficientHostCapacity", Capacity),
            ("Unsupported", Capacity),
            ("InvalidInstanceID.NotFound", NotFound),
            ("TargetGroupNotFound", NotFound),
            ("RuleNotFound", NotFound),
            ("ResourceNotFoundException", NotFound),
            ("InvocationDoesNotExist", NotFound),
            ("InvalidInstanceId", NotFound),
            ("ReceiptHandleIsInvalid", NotFound),
            ("OverLimit", Throttled),
            ("PriorityInUse", Conflict),
            ("ResourceExistsException", Conflict),
            ("DuplicateTargetGroupName", Conflict),
            ("ResourceInUse", Conflict),
            ("InternalError", Transient),
            ("ServiceUnavailable", Transient),
            ("InvalidInstanceID.Malformed", Fatal),
            ("UnauthorizedOperation", Fatal),
            ("ValidationError", Fatal),
            ("AccessDeniedException", Fatal),
        ];
        for (code, kind) in cases {
            assert_eq!(
                classify("Op", service_error(code, 400)).kind,
                kind,
                "code {code}"
            );
        }
    }

    #[test]
    fn codes_match_exactly_and_case_sensitively() {
        assert_eq!(
            classify("Op", service_error("invalidinstanceid.notfound", 400)).kind,
            CloudErrorKind::Fatal
        );
        assert_eq!(
            classify("Op", service_error("InvalidInstanceID", 400)).kind,
            CloudErrorKind::Fatal
        );
    }

    #[test]
    fn an_unknown_code_falls_back_on_the_http_status() {
        assert_eq!(
            classify("Op", service_error("SomethingNew", 503)).kind,
            CloudErrorKind::Transient
        );
        assert_eq!(
            classify("Op", service_error("SomethingNew", 500)).kind,
            CloudErrorKind::Transient
        );
        assert_eq!(
            classify("Op", service_error("SomethingNew", 429)).kind,
            CloudErrorKind::Throttled
        );
        assert_eq!(
            classify("Op", service_error("SomethingNew", 400)).kind,
            CloudErrorKind::Fatal
        );
        // A listed code wins over the status.
        assert_eq!(
            classify("Op", service_error("RuleNotFound", 500)).kind,
            CloudErrorKind::NotFound
        );
    }

    #[test]
    fn failures_outside_the_service_are_transient_except_construction() {
        let timeout: SdkError<DescribeInstancesError, HttpResponse> =
            SdkError::timeout_error("operation timed out");
        assert_eq!(classify("Op", timeout).kind, CloudErrorKind::Transient);
        let unreadable: SdkError<DescribeInstancesError, HttpResponse> = SdkError::response_error(
            "bad xml",
            HttpResponse::new(200.try_into().unwrap(), SdkBody::empty()),
        );
        assert_eq!(classify("Op", unreadable).kind, CloudErrorKind::Transient);
        let construction: SdkError<DescribeInstancesError, HttpResponse> =
            SdkError::construction_failure("missing field");
        assert_eq!(classify("Op", construction).kind, CloudErrorKind::Fatal);
    }

    #[test]
    fn the_message_comes_from_aws_with_our_context_in_front() {
        let err = with_context(
            classify("Op", service_error("RuleNotFound", 400)),
            "deleting rule r-1",
        );
        assert_eq!(err.message, "deleting rule r-1: something happened");
        assert_eq!(
            err.to_string(),
            "Op failed (not_found): RuleNotFound: deleting rule r-1: something happened"
        );
    }

    #[test]
    fn redact_removes_the_secret_from_message_and_code() {
        let err = CloudError::new(
            CloudErrorKind::Fatal,
            "CreateSecret",
            "Bad",
            "value 'hunter2' at 'secretString' failed",
        );
        let err = redact(err, "hunter2");
        assert!(!err.to_string().contains("hunter2"));
        assert!(!format!("{err:?}").contains("hunter2"));
        // An empty value would replace every position; it is left alone.
        let err = redact(CloudError::new(CloudErrorKind::Fatal, "Op", "C", "msg"), "");
        assert_eq!(err.message, "msg");
    }

    #[test]
    fn pagination_stops_on_an_empty_token_and_refuses_a_repeated_one() {
        assert_eq!(next_page("Op", None, None).unwrap(), None);
        assert_eq!(next_page("Op", Some("a".into()), Some("")).unwrap(), None);
        assert_eq!(
            next_page("Op", Some("a".into()), Some("b")).unwrap(),
            Some("b".to_string())
        );
        let stuck = next_page("Op", Some("a".into()), Some("a")).unwrap_err();
        assert_eq!(stuck.kind, CloudErrorKind::Transient);
    }

    #[test]
    fn truncate_counts_characters_not_bytes() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
