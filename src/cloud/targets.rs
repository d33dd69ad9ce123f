//! What the load balancer says of a target group: a target's health (DescribeTargetHealth) and
//! a group's CloudWatch dimensions (its request counts).

/// A target's health as the load balancer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealth {
    /// AWS's state: `healthy`, `unhealthy`, `initial`, `unused`, `draining`, `unavailable`;
    /// `missing` when the target is not registered.
    pub state: String,
    /// Why it is not healthy, as AWS says it (`Target.ResponseCodeMismatch: Health checks
    /// failed with these codes: [502]`).
    pub reason: Option<String>,
}

impl TargetHealth {
    pub fn is_healthy(&self) -> bool {
        self.state == "healthy"
    }

    /// Failing its health checks (not merely starting, unused or gone).
    pub fn is_unhealthy(&self) -> bool {
        self.state == "unhealthy"
    }
}

/// The CloudWatch dimensions of one target group's metrics: the load balancer
/// (`app/<name>/<id>`) and the target group (`targetgroup/<name>/<id>`), both from ARNs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetGroupMetric {
    pub load_balancer: String,
    pub target_group: String,
}

impl TargetGroupMetric {
    /// The dimensions of `target_group_arn` behind the load balancer of `listener_arn`; None if
    /// either ARN is not of the expected form.
    pub fn from_arns(listener_arn: &str, target_group_arn: &str) -> Option<TargetGroupMetric> {
        // arn:aws:elasticloadbalancing:<region>:<account>:listener/app/<name>/<id>/<listener-id>
        let listener = listener_arn.split_once(":listener/")?.1;
        let mut parts = listener.split('/');
        let (kind, name, id) = (parts.next()?, parts.next()?, parts.next()?);
        // arn:aws:elasticloadbalancing:<region>:<account>:targetgroup/<name>/<id>
        let group = target_group_arn.split_once(":targetgroup/")?.1;
        Some(TargetGroupMetric {
            load_balancer: format!("{kind}/{name}/{id}"),
            target_group: format!("targetgroup/{group}"),
        })
    }
}
