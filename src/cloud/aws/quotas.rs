//! The account's quotas (Service Quotas GetServiceQuota) and the vCPUs of instance types
//! (EC2 DescribeInstanceTypes), for the daemon's quota check; the spot prices of the tiers'
//! offerings (EC2 DescribeSpotPriceHistory), for the cost.

use super::AwsCloud;
use super::errors::{call, next_page, with_context};
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

    /// Every page of DescribeSpotPriceHistory from now: AWS then answers each (type, zone,
    /// product) once, with its price in effect. The zones go as a filter, the products as
    /// ProductDescriptions (`Linux/UNIX`, `Linux/UNIX (Amazon VPC)`), checked here again: moto
    /// ignores them.
    pub(super) async fn aws_spot_prices(
        &self,
        instance_types: &[String],
        zones: &[String],
    ) -> CloudResult<Vec<crate::model::cost::SpotPrice>> {
        use aws_sdk_ec2::primitives::DateTime;
        use aws_sdk_ec2::types::{Filter, InstanceType};
        if instance_types.is_empty() || zones.is_empty() {
            return Ok(Vec::new());
        }
        let types: Vec<InstanceType> = instance_types
            .iter()
            .map(|t| InstanceType::from(t.as_str()))
            .collect();
        let zone_filter = Filter::builder()
            .name("availability-zone")
            .set_values(Some(zones.to_vec()))
            .build();
        let mut latest: BTreeMap<(String, String), crate::model::cost::SpotPrice> = BTreeMap::new();
        let mut next_token: Option<String> = None;
        loop {
            let page = call(
                "ec2",
                "DescribeSpotPriceHistory",
                self.ec2
                    .describe_spot_price_history()
                    .set_instance_types(Some(types.clone()))
                    .product_descriptions("Linux/UNIX")
                    .product_descriptions("Linux/UNIX (Amazon VPC)")
                    .filters(zone_filter.clone())
                    .start_time(DateTime::from(std::time::SystemTime::now()))
                    .max_results(1000)
                    .set_next_token(next_token.clone())
                    .send(),
            )
            .await
            .map_err(|err| with_context(err, "reading the spot prices of the tiers' types"))?;
            for entry in page.spot_price_history() {
                let linux = entry
                    .product_description()
                    .is_some_and(|p| p.as_str().starts_with("Linux/UNIX"));
                let (Some(instance_type), Some(zone), Some(price)) = (
                    entry.instance_type(),
                    entry.availability_zone(),
                    entry.spot_price().and_then(|p| p.parse::<f64>().ok()),
                ) else {
                    continue;
                };
                if !linux || !price.is_finite() || price < 0.0 {
                    continue;
                }
                let since = entry
                    .timestamp()
                    .and_then(|t| t.to_millis().ok())
                    .unwrap_or(0);
                let key = (instance_type.as_str().to_string(), zone.to_string());
                // The newest per offering, should AWS answer more than one.
                if latest.get(&key).is_none_or(|known| known.since <= since) {
                    let price = crate::model::cost::SpotPrice {
                        instance_type: key.0.clone(),
                        zone: key.1.clone(),
                        dollars_per_hour: price,
                        since,
                    };
                    latest.insert(key, price);
                }
            }
            match next_page(
                "DescribeSpotPriceHistory",
                next_token.clone(),
                page.next_token(),
            )? {
                Some(token) => next_token = Some(token),
                None => return Ok(latest.into_values().collect()),
            }
        }
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
