//! SSM for [`AwsCloud`]: SendCommand (a shell script on one instance, as `AWS-RunShellScript`)
//! and GetCommandInvocation (the command's status, with a failure's stderr).
//!
//! Must not: write the scripts (that is `commands`) or wait for a command to finish (callers
//! poll `command_status`).

use super::AwsCloud;
use super::errors::{call, missing, truncate, with_context};
use crate::cloud::{CloudErrorKind, CloudResult, CommandStatus};
use crate::model::InstanceId;

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
}
