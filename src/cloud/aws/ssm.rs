//! SSM for [`AwsCloud`]: SendCommand (a shell script on one instance, as `AWS-RunShellScript`),
//! GetCommandInvocation (the command's status, with a failure's stderr) and
//! DescribeInstanceInformation (whose agents are online, so a probe waits for its agent).
//!
//! Must not: write the scripts (that is `commands`) or wait for a command to finish (callers
//! poll `command_status`).

use super::AwsCloud;
use super::errors::{call, cannot_answer, missing, next_page, truncate, with_context};
use crate::cloud::{AGENT_IDS_PER_CALL, CloudError, CloudErrorKind, CloudResult, CommandStatus};
use crate::model::InstanceId;
use std::collections::BTreeSet;

/// SSM's limit on a command comment.
const MAX_COMMENT_CHARS: usize = 100;
/// How much of a failed command's stderr is kept.
const MAX_FAILURE_CHARS: usize = 500;

impl AwsCloud {
    pub(super) async fn ssm_send_command(
        &self,
        instance: &InstanceId,
        comment: &str,
        script: &str,
        timeout_seconds: u32,
    ) -> CloudResult<String> {
        let output = call(
            "ssm",
            "SendCommand",
            self.ssm
                .send_command()
                .document_name("AWS-RunShellScript")
                .instance_ids(instance.0.clone())
                .comment(truncate(comment, MAX_COMMENT_CHARS))
                .parameters("commands", vec![script.to_string()])
                .parameters("executionTimeout", vec![timeout_seconds.to_string()])
                .send(),
        )
        .await
        .map_err(|err| with_context(err, format!("sending command to instance {instance}")))?;
        output
            .command()
            .and_then(|command| command.command_id())
            .map(str::to_string)
            .ok_or_else(|| missing("SendCommand", "command id"))
    }

    pub(super) async fn ssm_command_status(
        &self,
        command_id: &str,
        instance: &InstanceId,
    ) -> CloudResult<CommandStatus> {
        use aws_sdk_ssm::types::CommandInvocationStatus as Status;
        let result = call(
            "ssm",
            "GetCommandInvocation",
            self.ssm
                .get_command_invocation()
                .command_id(command_id)
                .instance_id(instance.0.clone())
                .send(),
        )
        .await;
        let output = match result {
            Ok(output) => output,
            // AWS answers this for a short while after SendCommand.
            Err(err)
                if err.kind == CloudErrorKind::NotFound && err.code == "InvocationDoesNotExist" =>
            {
                return Ok(CommandStatus::Pending);
            }
            Err(err) => {
                return Err(with_context(
                    err,
                    format!("reading command {command_id} on instance {instance}"),
                ));
            }
        };
        let failure = || {
            let stderr = output.standard_error_content().unwrap_or_default().trim();
            let text = if stderr.is_empty() {
                output.status_details().unwrap_or_default()
            } else {
                stderr
            };
            CommandStatus::Failed(truncate(text, MAX_FAILURE_CHARS))
        };
        Ok(match output.status() {
            Some(Status::Success) => CommandStatus::Success,
            Some(Status::Failed | Status::TimedOut | Status::Cancelled | Status::Cancelling) => {
                failure()
            }
            Some(Status::Pending | Status::InProgress | Status::Delayed) | None => {
                CommandStatus::Pending
            }
            Some(other) => {
                tracing::warn!(
                    command_id,
                    %instance,
                    status = other.as_str(),
                    "unknown command status, treating it as pending"
                );
                CommandStatus::Pending
            }
        })
    }

    /// DescribeInstanceInformation for `instances`, 50 ids a call: the ones whose agent is
    /// `Online`. `None` when the service cannot answer this call at all (denied, not
    /// implemented): see [`cannot_answer`]. Two attempts, not the client's budget: the answer
    /// only saves probes, and the caller falls back to a back-off when it fails.
    pub(super) async fn ssm_agents_online(
        &self,
        instances: &[InstanceId],
    ) -> CloudResult<Option<BTreeSet<InstanceId>>> {
        use aws_sdk_ssm::types::{InstanceInformationStringFilter, PingStatus};
        const OPERATION: &str = "DescribeInstanceInformation";
        let mut online = BTreeSet::new();
        for chunk in instances.chunks(AGENT_IDS_PER_CALL) {
            let filter = InstanceInformationStringFilter::builder()
                .key("InstanceIds")
                .set_values(Some(chunk.iter().map(|id| id.0.clone()).collect()))
                .build()
                .map_err(|e| {
                    CloudError::new(CloudErrorKind::Fatal, OPERATION, "", e.to_string())
                })?;
            let mut next_token: Option<String> = None;
            loop {
                let result = call(
                    "ssm",
                    OPERATION,
                    self.ssm
                        .describe_instance_information()
                        .filters(filter.clone())
                        .max_results(AGENT_IDS_PER_CALL as i32)
                        .set_next_token(next_token.clone())
                        .customize()
                        .config_override(aws_sdk_ssm::config::Builder::default().retry_config(
                            aws_config::retry::RetryConfig::standard().with_max_attempts(2),
                        ))
                        .send(),
                )
                .await;
                let page = match result {
                    Ok(page) => page,
                    Err(err) if cannot_answer(&err) => {
                        tracing::debug!(error = %err, "SSM cannot say which agents are online");
                        return Ok(None);
                    }
                    Err(err) => return Err(with_context(err, "listing SSM agents")),
                };
                online.extend(
                    page.instance_information_list()
                        .iter()
                        .filter(|info| info.ping_status() == Some(&PingStatus::Online))
                        .filter_map(|info| info.instance_id())
                        .map(|id| InstanceId(id.to_string())),
                );
                match next_page(OPERATION, next_token.clone(), page.next_token())? {
                    Some(token) => next_token = Some(token),
                    None => break,
                }
            }
        }
        Ok(Some(online))
    }
}
