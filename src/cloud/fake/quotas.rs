//! The fake's ECR image digests (`set_image_digest`), its spot prices (`set_spot_price`, over
//! the simulated profile's) and its account quotas: values a test sets (`set_quota`), answered by `quota_values`, and
//! the spot vCPU quotas enforced by RunInstances as EC2 does (MaxSpotInstanceCountExceeded once
//! the family's running and pending spot vCPUs would pass it). moto enforces none of them.

use super::{FakeCloud, State};
use crate::cloud::Lifecycle;
use crate::cloud::{CloudError, CloudErrorKind, CloudResult, LaunchRequest};
use crate::model::quota::{Quota, SpotFamily};
use std::collections::BTreeMap;

/// vCPUs of the instance types the tests and the profile use (EC2's published figures).
pub(super) fn vcpus_of(instance_type: &str) -> Option<u32> {
    match instance_type {
        "t3.micro" | "t3.small" | "t3.medium" | "t3a.small" | "t3a.medium" | "t3.large"
        | "m5.large" | "c5.large" | "m7i.large" => Some(2),
        "t3.xlarge" | "m5.xlarge" | "c5.xlarge" | "g5.xlarge" => Some(4),
        _ => None,
    }
}

impl FakeCloud {
    /// The account's value of `quota` from now on (none is set by default: unlimited).
    pub fn set_quota(&self, quota: Quota, value: f64) {
        self.lock().quotas.insert(quota, value);
    }

    pub(super) async fn fake_quota_values(
        &self,
        quotas: &[Quota],
    ) -> CloudResult<BTreeMap<Quota, f64>> {
        let state = self.enter("GetServiceQuota", 1).await?;
        Ok(quotas
            .iter()
            .filter_map(|q| state.quotas.get(q).map(|v| (*q, *v)))
            .collect())
    }

    /// The digest ECR gives `repository:tag` from now on.
    pub fn set_image_digest(&self, repository: &str, tag: &str, digest: &str) {
        let key = format!("{repository}:{tag}");
        self.lock().images.insert(key, digest.to_string());
    }

    pub(super) async fn fake_image_digest(
        &self,
        image: &crate::image::EcrImage,
    ) -> CloudResult<String> {
        let state = self.enter("DescribeImages", 1).await?;
        let key = format!("{}:{}", image.repository, image.tag);
        state.images.get(&key).cloned().ok_or_else(|| {
            CloudError::new(
                CloudErrorKind::NotFound,
                "DescribeImages",
                "ImageNotFoundException",
                format!("no image {key}"),
            )
        })
    }

    /// The spot price of `instance_type` in `zone` from now on.
    pub fn set_spot_price(&self, instance_type: &str, zone: &str, dollars_per_hour: f64) {
        let key = (instance_type.to_string(), zone.to_string());
        self.lock().spot_prices.insert(key, dollars_per_hour);
    }

    /// What a test set, else the simulated profile's price of the type (in every zone); plain
    /// mode knows no other. Stamped with the fake's clock.
    pub(super) async fn fake_spot_prices(
        &self,
        instance_types: &[String],
        zones: &[String],
    ) -> CloudResult<Vec<crate::model::cost::SpotPrice>> {
        let state = self.enter("DescribeSpotPriceHistory", 1).await?;
        let profile = self.profile().map(|p| &p.spot_prices);
        // Not `self.now()`: it takes the lock held here in plain mode.
        let now = self.sim.as_ref().map_or(state.now, |sim| sim.now());
        let mut prices = Vec::new();
        for instance_type in instance_types {
            for zone in zones {
                let key = (instance_type.clone(), zone.clone());
                let set = state.spot_prices.get(&key);
                let Some(price) = set.or_else(|| profile?.get(instance_type)) else {
                    continue;
                };
                prices.push(crate::model::cost::SpotPrice {
                    instance_type: instance_type.clone(),
                    zone: zone.clone(),
                    dollars_per_hour: *price,
                    since: now,
                });
            }
        }
        Ok(prices)
    }

    /// GetMetricData's RequestCount of each group: what a test set, else 0.
    pub(super) async fn fake_request_counts(
        &self,
        groups: &[crate::cloud::TargetGroupMetric],
    ) -> CloudResult<Vec<f64>> {
        let state = self.enter("GetMetricData", 1).await?;
        let count = |g: &crate::cloud::TargetGroupMetric| {
            let counts = &state.ebs.request_counts;
            counts.get(&g.target_group).copied().unwrap_or(0.0)
        };
        Ok(groups.iter().map(count).collect())
    }

    pub(super) async fn fake_instance_vcpus(
        &self,
        instance_types: &[String],
    ) -> CloudResult<BTreeMap<String, u32>> {
        let _state = self.enter("DescribeInstanceTypes", 1).await?;
        Ok(instance_types
            .iter()
            .filter_map(|t| Some((t.clone(), vcpus_of(t)?)))
            .collect())
    }
}

/// The spot vCPU quota's refusal of `request`, if its family's live spot vCPUs plus the request's
/// would pass the quota set for it.
pub(super) fn spot_quota_refusal(state: &State, request: &LaunchRequest) -> Option<CloudError> {
    if !request.spot {
        return None;
    }
    let family = SpotFamily::of(&request.instance_type)?;
    let limit = *state.quotas.get(&Quota::SpotVcpus(family))?;
    let used: u32 = state
        .instances
        .values()
        .filter(|i| i.spot && !matches!(i.lifecycle, Lifecycle::Terminated))
        .filter(|i| SpotFamily::of(&i.instance_type) == Some(family))
        .filter_map(|i| vcpus_of(&i.instance_type))
        .sum();
    let wanted = request.count * vcpus_of(&request.instance_type)?;
    (f64::from(used + wanted) > limit).then(|| {
        CloudError::new(
            CloudErrorKind::Quota,
            "RunInstances",
            "MaxSpotInstanceCountExceeded",
            format!(
                "Max spot instance count exceeded: {used} of {limit} vCPUs in use, {wanted} asked"
            ),
        )
    })
}
