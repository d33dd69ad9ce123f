//! CloudWatch for [`AwsCloud`]: how many requests the load balancer sent each user's target
//! group (`AWS/ApplicationELB` `RequestCount`, Sum), in batched GetMetricData calls, for
//! auto-sleep.
//!
//! Must not: decide who sleeps (the reconciler does), or treat a missing data point as anything
//! but zero: the metric is only reported while requests flow.

use super::AwsCloud;
use super::errors::{call, next_page, with_context};
use crate::cloud::{CloudResult, TargetGroupMetric};
use std::time::{Duration, SystemTime};

/// GetMetricData takes at most 500 queries per call.
const MAX_QUERIES: usize = 500;

impl AwsCloud {
    pub(super) async fn cloudwatch_request_counts(
        &self,
        groups: &[TargetGroupMetric],
        window: Duration,
    ) -> CloudResult<Vec<f64>> {
        use aws_sdk_cloudwatch::primitives::DateTime;
        use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
        // One period covering the whole window, in whole minutes (CloudWatch's resolution for
        // this metric).
        let period = window.as_secs().div_ceil(60).max(1) * 60;
        let end = SystemTime::now();
        let start = end - Duration::from_secs(period);
        let mut counts = vec![0.0; groups.len()];
        for (chunk_index, chunk) in groups.chunks(MAX_QUERIES).enumerate() {
            let queries: Vec<MetricDataQuery> = chunk
                .iter()
                .enumerate()
                .map(|(i, group)| {
                    let metric = Metric::builder()
                        .namespace("AWS/ApplicationELB")
                        .metric_name("RequestCount")
                        .dimensions(
                            Dimension::builder()
                                .name("LoadBalancer")
                                .value(&group.load_balancer)
                                .build(),
                        )
                        .dimensions(
                            Dimension::builder()
                                .name("TargetGroup")
                                .value(&group.target_group)
                                .build(),
                        )
                        .build();
                    MetricDataQuery::builder()
                        .id(format!("q{i}"))
                        .metric_stat(
                            MetricStat::builder()
                                .metric(metric)
                                .period(i32::try_from(period).unwrap_or(i32::MAX))
                                .stat("Sum")
                                .build(),
                        )
                        .return_data(true)
                        .build()
                })
                .collect();
            let mut next_token: Option<String> = None;
            loop {
                let page = call(
                    "cloudwatch",
                    "GetMetricData",
                    self.cloudwatch
                        .get_metric_data()
                        .set_metric_data_queries(Some(queries.clone()))
                        .start_time(DateTime::from(start))
                        .end_time(DateTime::from(end))
                        .set_next_token(next_token.clone())
                        .send(),
                )
                .await
                .map_err(|err| with_context(err, "reading the target groups' request counts"))?;
                for result in page.metric_data_results() {
                    let Some(index) = result
                        .id()
                        .and_then(|id| id.strip_prefix('q'))
                        .and_then(|n| n.parse::<usize>().ok())
                    else {
                        continue;
                    };
                    if let Some(count) = counts.get_mut(chunk_index * MAX_QUERIES + index) {
                        *count += result.values().iter().sum::<f64>();
                    }
                }
                match next_page("GetMetricData", next_token.clone(), page.next_token())? {
                    Some(token) => next_token = Some(token),
                    None => break,
                }
            }
        }
        Ok(counts)
    }
}
