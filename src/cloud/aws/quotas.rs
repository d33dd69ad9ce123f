//! The account's quotas (Service Quotas GetServiceQuota) and the vCPUs of instance types
//! (EC2 DescribeInstanceTypes), for the daemon's quota check.

use super::AwsCloud;
use super::errors::{call, with_context};
use crate::cloud::{CloudErrorKind, CloudResult};
use crate::model::quota::Quota;
use std::collections::BTreeMap;

impl AwsCloud {
    pub(super) async fn aws_instance_vcpus(
        &self,
        instance_types: &[String],
    ) -> CloudResult<BTreeMap<String, u32>> {
        let mut vcpus = BTreeMap::new();
        // At most 100 types per call; a pool has a handful.
        for chunk in instance_types.chunks(100) {
            let types = chunk
                .iter()
                .map(|t| aws_sdk_ec2::types::InstanceType::from(t.as_str()))
                .collect();
            let output = call(
                "ec2",
                "DescribeInstanceTypes",
                self.ec2
                    .describe_instance_types()
                    .set_instance_types(Some(types))
                    .send(),
            )
            .await
            .map_err(|err| with_context(err, "reading the vCPUs of the pool's instance types"))?;
            for info in output.instance_types() {
                let (Some(name), Some(count)) = (
                    info.instance_type(),
                    info.v_cpu_info().and_then(|v| v.default_v_cpus()),
                ) else {
                    continue;
                };
                if let Ok(count) = u32::try_from(count) {
                    vcpus.insert(name.as_str().to_string(), count);
                }
            }
        }
        Ok(vcpus)
    }

    pub(super) async fn aws_quota_values(
        &self,
        quotas: &[Quota],
    ) -> CloudResult<BTreeMap<Quota, f64>> {
        let mut values = BTreeMap::new();
        for &quota in quotas {
            let answer = call(
                "servicequotas",
                "GetServiceQuota",
                self.quotas
                    .get_service_quota()
                    .service_code(quota.service_code())
                    .quota_code(quota.code())
                    .send(),
            )
            .await;
            match answer {
                Ok(output) => {
                    if let Some(value) = output.quota().and_then(|q| q.value()) {
                        values.insert(quota, value);
                    }
                }
                // A quota this region (or an emulator) does not know is left unread.
                Err(err) if err.kind == CloudErrorKind::NotFound => {
                    tracing::debug!(quota = quota.label(), error = %err, "quota not known here");
                }
                Err(err) => {
                    return Err(with_context(
                        err,
                        format!("reading quota {} ({})", quota.code(), quota.label()),
                    ));
                }
            }
        }
        Ok(values)
    }
}
