//! Secrets Manager for [`AwsCloud`]: the users' secrets. CreateSecret, or PutSecretValue when
//! the secret exists (the API's request-path writes, with their own retry budget), TagResource
//! and UntagResource, DeleteSecret (forced, no recovery window), and ListSecrets by the pool's
//! tag.
//!
//! Must not: let a secret value reach an error, a log line or a `Debug` output (every error of
//! a write goes through `redact`).

use super::errors::{call, missing, next_page, redact, with_context};
use super::{AwsCloud, AwsCloudConfig, sdk_tags};
use crate::cloud::{CloudErrorKind, CloudResult, PoolResource, Tags, tags};

/// ListSecrets returns at most 100 secrets per page.
const MAX_SECRETS_PAGE_SIZE: i32 = 100;

sdk_tags!(secret_tags, aws_sdk_secretsmanager::types::Tag);

impl AwsCloud {
    pub(super) async fn secrets_put_secret(
        &self,
        name: &str,
        value: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        let created = call(
            "secretsmanager",
            "CreateSecret",
            self.secrets
                .create_secret()
                .name(name)
                .secret_string(value)
                .set_tags((!tags.is_empty()).then(|| secret_tags(tags)))
                .customize()
                .config_override(secret_write_override(&self.config))
                .send(),
        )
        .await;
        match created {
            Ok(output) => {
                return output
                    .arn()
                    .map(str::to_string)
                    .ok_or_else(|| missing("CreateSecret", "secret ARN"));
            }
            // ResourceExistsException: the secret exists, so put a new version instead.
            Err(err) if err.kind == CloudErrorKind::Conflict => {}
            Err(err) => {
                return Err(redact(
                    with_context(err, format!("creating secret {name}")),
                    value,
                ));
            }
        }
        let output = call(
            "secretsmanager",
            "PutSecretValue",
            self.secrets
                .put_secret_value()
                .secret_id(name)
                .secret_string(value)
                .customize()
                .config_override(secret_write_override(&self.config))
                .send(),
        )
        .await
        .map_err(|err| redact(with_context(err, format!("updating secret {name}")), value))?;
        let arn = output
            .arn()
            .map(str::to_string)
            .ok_or_else(|| missing("PutSecretValue", "secret ARN"))?;
        self.tag_secret_with(&arn, tags, Some(secret_write_override(&self.config)))
            .await?;
        Ok(arn)
    }

    pub(super) async fn secrets_update_secret(
        &self,
        secret_id: &str,
        value: &str,
    ) -> CloudResult<()> {
        call(
            "secretsmanager",
            "PutSecretValue",
            self.secrets
                .put_secret_value()
                .secret_id(secret_id)
                .secret_string(value)
                .customize()
                .config_override(secret_write_override(&self.config))
                .send(),
        )
        .await
        .map(|_| ())
        .map_err(|err| {
            redact(
                with_context(err, format!("updating secret {secret_id}")),
                value,
            )
        })
    }

    pub(super) async fn secrets_tag_secret(&self, secret_id: &str, tags: &Tags) -> CloudResult<()> {
        self.tag_secret_with(secret_id, tags, None).await
    }

    pub(super) async fn secrets_untag_secret(
        &self,
        secret_id: &str,
        keys: &[&str],
    ) -> CloudResult<()> {
        if keys.is_empty() {
            return Ok(());
        }
        call(
            "secretsmanager",
            "UntagResource",
            self.secrets
                .untag_resource()
                .secret_id(secret_id)
                .set_tag_keys(Some(keys.iter().map(|key| key.to_string()).collect()))
                .send(),
        )
        .await
        .map_err(|err| with_context(err, format!("untagging secret {secret_id}")))?;
        Ok(())
    }

    pub(super) async fn secrets_delete_secret(&self, secret_id: &str) -> CloudResult<()> {
        let result = call(
            "secretsmanager",
            "DeleteSecret",
            self.secrets
                .delete_secret()
                .secret_id(secret_id)
                .force_delete_without_recovery(true)
                .send(),
        )
        .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if err.kind == CloudErrorKind::NotFound => Ok(()),
            Err(err) => Err(with_context(err, format!("deleting secret {secret_id}"))),
        }
    }

    pub(super) async fn secrets_list_pool_secrets(&self) -> CloudResult<Vec<PoolResource>> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = call(
                "secretsmanager",
                "ListSecrets",
                self.secrets
                    .list_secrets()
                    .filters(
                        Filter::builder()
                            .key(FilterNameStringType::TagKey)
                            .values(tags::POOL)
                            .build(),
                    )
                    .filters(
                        Filter::builder()
                            .key(FilterNameStringType::TagValue)
                            .values(&self.config.pool)
                            .build(),
                    )
                    .max_results(MAX_SECRETS_PAGE_SIZE.min(self.page_size))
                    .set_next_token(token.clone())
                    .send(),
            )
            .await
            .map_err(|err| with_context(err, "listing secrets"))?;
            for entry in page.secret_list() {
                let tags: Tags = entry
                    .tags()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect();
                // The two filters match the key and the value independently; check the pair.
                if tags.get(tags::POOL) != Some(&self.config.pool) {
                    continue;
                }
                let (Some(arn), Some(name)) = (entry.arn(), entry.name()) else {
                    continue;
                };
                out.push(PoolResource {
                    arn: arn.to_string(),
                    name: name.to_string(),
                    created_at: entry.created_date().and_then(|d| d.to_millis().ok()),
                    tags,
                });
            }
            token = next_page("ListSecrets", token, page.next_token())?;
            if token.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// TagResource on a secret, with a per-operation config override (the request path's
    /// longer retry budget) or the client's.
    async fn tag_secret_with(
        &self,
        secret_id: &str,
        tags: &Tags,
        config_override: Option<aws_sdk_secretsmanager::config::Builder>,
    ) -> CloudResult<()> {
        if tags.is_empty() {
            return Ok(());
        }
        let mut request = self
            .secrets
            .tag_resource()
            .secret_id(secret_id)
            .set_tags(Some(secret_tags(tags)))
            .customize();
        if let Some(config_override) = config_override {
            request = request.config_override(config_override);
        }
        call("secretsmanager", "TagResource", request.send())
            .await
            .map_err(|err| with_context(err, format!("tagging secret {secret_id}")))?;
        Ok(())
    }
}

/// The per-operation override of the request-path secret writes: the same standard retry mode
/// with `secret_write_attempts`. Everything else (timeouts, endpoint, credentials) stays the
/// client's.
fn secret_write_override(config: &AwsCloudConfig) -> aws_sdk_secretsmanager::config::Builder {
    aws_sdk_secretsmanager::config::Builder::default().retry_config(
        aws_config::retry::RetryConfig::standard()
            .with_max_attempts(config.secret_write_attempts.max(1))
            .with_max_backoff(crate::cloud::SECRET_WRITE_MAX_BACKOFF),
    )
}
