//! The quota classes (which AWS operation draws from which account bucket), the buckets' sizes
//! from `aws-profile.md`, the client-side shares of them (`RateLimits`, `SPOTPOOL_RATE_LIMITS`),
//! and the meter of the SDK's retries that `Limited` charges to them.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// A family of AWS operations that share one account-level token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QuotaClass {
    /// EC2 Describe* calls.
    Ec2Describe,
    /// EC2 mutating calls other than RunInstances (CreateTags, DeleteTags, TerminateInstances).
    Ec2Mutate,
    /// RunInstances calls.
    Ec2RunCalls,
    /// Instances launched by RunInstances (a call of count n takes n tokens).
    Ec2RunInstances,
    /// ELBv2 mutating calls (CreateTargetGroup, CreateRule, DeleteRule, DeleteTargetGroup, ...).
    ElbMutate,
    /// RegisterTargets and DeregisterTargets.
    ElbRegister,
    /// ELBv2 Describe* calls.
    ElbDescribe,
    /// SSM SendCommand.
    SsmSend,
    /// SSM GetCommandInvocation and other reads.
    SsmRead,
    /// Secrets Manager writes (CreateSecret, PutSecretValue, TagResource, DeleteSecret, ...).
    SecretsWrite,
    /// Secrets Manager reads (ListSecrets, DescribeSecret).
    SecretsRead,
    /// CloudWatch GetMetricData (auto-sleep's request counts).
    CloudWatchRead,
}

impl QuotaClass {
    pub const ALL: [QuotaClass; 12] = [
        QuotaClass::Ec2Describe,
        QuotaClass::Ec2Mutate,
        QuotaClass::Ec2RunCalls,
        QuotaClass::Ec2RunInstances,
        QuotaClass::ElbMutate,
        QuotaClass::ElbRegister,
        QuotaClass::ElbDescribe,
        QuotaClass::SsmSend,
        QuotaClass::SsmRead,
        QuotaClass::SecretsWrite,
        QuotaClass::SecretsRead,
        QuotaClass::CloudWatchRead,
    ];

    /// The name used in `SPOTPOOL_RATE_LIMITS` and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            QuotaClass::Ec2Describe => "ec2-describe",
            QuotaClass::Ec2Mutate => "ec2-mutate",
            QuotaClass::Ec2RunCalls => "ec2-run",
            QuotaClass::Ec2RunInstances => "ec2-run-instances",
            QuotaClass::ElbMutate => "elb-mutate",
            QuotaClass::ElbRegister => "elb-register",
            QuotaClass::ElbDescribe => "elb-describe",
            QuotaClass::SsmSend => "ssm-send",
            QuotaClass::SsmRead => "ssm-read",
            QuotaClass::SecretsWrite => "secrets-write",
            QuotaClass::SecretsRead => "secrets-read",
            QuotaClass::CloudWatchRead => "cloudwatch-read",
        }
    }

    pub fn parse(name: &str) -> Option<QuotaClass> {
        QuotaClass::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The bucket an AWS operation draws one token from. RunInstances also draws one token per
    /// instance from [`QuotaClass::Ec2RunInstances`]; see [`tokens_for`].
    pub fn of_operation(operation: &str) -> QuotaClass {
        match operation {
            "RunInstances" => QuotaClass::Ec2RunCalls,
            "CreateTags"
            | "DeleteTags"
            | "ModifyInstanceAttribute"
            | "TerminateInstances"
            | "CreateVolume"
            | "AttachVolume"
            | "DetachVolume"
            | "DeleteVolume"
            | "CreateSnapshot"
            | "DeleteSnapshot" => QuotaClass::Ec2Mutate,
            "GetMetricData" => QuotaClass::CloudWatchRead,
            "RegisterTargets" | "DeregisterTargets" => QuotaClass::ElbRegister,
            "CreateTargetGroup" | "DeleteTargetGroup" | "CreateRule" | "DeleteRule"
            | "ModifyRule" | "ModifyTargetGroup" | "AddTags" | "RemoveTags" => {
                QuotaClass::ElbMutate
            }
            "SendCommand" | "CancelCommand" => QuotaClass::SsmSend,
            "GetCommandInvocation" | "ListCommandInvocations" | "DescribeInstanceInformation" => {
                QuotaClass::SsmRead
            }
            "CreateSecret" | "PutSecret" | "PutSecretValue" | "UpdateSecret" | "TagResource"
            | "UntagResource" | "DeleteSecret" => QuotaClass::SecretsWrite,
            "ListSecrets" | "DescribeSecret" => QuotaClass::SecretsRead,
            op if op.starts_with("Describe") && is_elb_describe(op) => QuotaClass::ElbDescribe,
            op if op.starts_with("Describe") => QuotaClass::Ec2Describe,
            // Unknown operations count as EC2 mutations: the most conservative shared bucket.
            _ => QuotaClass::Ec2Mutate,
        }
    }
}

fn is_elb_describe(operation: &str) -> bool {
    matches!(
        operation,
        "DescribeTargetGroups"
            | "DescribeRules"
            | "DescribeTags"
            | "DescribeTargetHealth"
            | "DescribeListeners"
            | "DescribeLoadBalancers"
    )
}

/// Every (bucket, tokens) an operation takes: RunInstances of `count` instances takes one call
/// token and `count` instance tokens; everything else takes one token of its class.
pub fn tokens_for(operation: &str, count: u32) -> Vec<(QuotaClass, u32)> {
    let class = QuotaClass::of_operation(operation);
    if class == QuotaClass::Ec2RunCalls {
        vec![
            (QuotaClass::Ec2RunCalls, 1),
            (QuotaClass::Ec2RunInstances, count.max(1)),
        ]
    } else {
        vec![(class, 1)]
    }
}

/// Attempts the account metered that the client-side buckets have not charged yet: the retries
/// the SDK made inside logical calls. The cloud adapter records them; [`Limited`] takes them
/// from the bucket of their class before that class's next call.
#[derive(Debug, Default)]
pub struct RetryMeter {
    owed: Mutex<BTreeMap<QuotaClass, u32>>,
}

impl RetryMeter {
    /// One retry of `operation` (one more attempt than the call's first).
    pub fn record(&self, operation: &str) {
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        for (class, tokens) in tokens_for(operation, 1) {
            *owed.entry(class).or_default() += tokens;
        }
    }

    /// Takes what `class` owes.
    pub(super) fn take(&self, class: QuotaClass) -> u32 {
        let mut owed = self.owed.lock().unwrap_or_else(|e| e.into_inner());
        owed.remove(&class).unwrap_or(0)
    }
}

/// A token bucket's size: at most `capacity` tokens, refilled at `refill_per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub capacity: u32,
    pub refill_per_second: f64,
}

impl Bucket {
    pub const fn new(capacity: u32, refill_per_second: f64) -> Bucket {
        Bucket {
            capacity,
            refill_per_second,
        }
    }

    /// This bucket scaled by `factor` (capacity at least 1).
    pub fn scaled(self, factor: f64) -> Bucket {
        self.share(factor, factor)
    }

    /// This bucket with its capacity scaled by `burst` (at least 1) and its refill by `refill`.
    pub fn share(self, burst: f64, refill: f64) -> Bucket {
        Bucket {
            capacity: ((f64::from(self.capacity) * burst).floor() as u32).max(1),
            refill_per_second: self.refill_per_second * refill,
        }
    }
}

/// The account quotas of `aws-profile.md` (per account and region). SSM is not in the profile;
/// its numbers are conservative defaults of the same shape.
pub fn account_quota(class: QuotaClass) -> Bucket {
    match class {
        QuotaClass::Ec2Describe => Bucket::new(100, 20.0),
        QuotaClass::Ec2Mutate => Bucket::new(50, 5.0),
        QuotaClass::Ec2RunCalls => Bucket::new(5, 2.0),
        QuotaClass::Ec2RunInstances => Bucket::new(1000, 2.0),
        QuotaClass::ElbMutate => Bucket::new(20, 3.0),
        QuotaClass::ElbRegister => Bucket::new(20, 4.0),
        QuotaClass::ElbDescribe => Bucket::new(40, 10.0),
        QuotaClass::SsmSend => Bucket::new(20, 5.0),
        QuotaClass::SsmRead => Bucket::new(40, 20.0),
        QuotaClass::SecretsWrite => Bucket::new(50, 50.0),
        QuotaClass::SecretsRead => Bucket::new(50, 50.0),
        // GetMetricData: 50 transactions per second per account and region.
        QuotaClass::CloudWatchRead => Bucket::new(50, 50.0),
    }
}

/// The share of each account quota's refill rate the daemon allows itself by default.
pub const DEFAULT_SHARE: f64 = 0.8;

/// The share of each account quota's capacity (its burst) the daemon allows itself by default.
/// Retries are charged after the fact ([`RetryMeter`]), so a burst of the whole client capacity
/// reaches AWS together with its own retries: capacity × (1 + retries per call) must stay under
/// the account's capacity. At 20% failed attempts a call averages 0.25 retries, and 80% would
/// leave nothing (0.8 × 1.25 = 1); 60% leaves a quarter of the bucket (0.6 × 1.25 = 0.75).
pub const DEFAULT_BURST_SHARE: f64 = 0.6;

/// The client-side bucket of every quota class.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    pub buckets: BTreeMap<QuotaClass, Bucket>,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            buckets: QuotaClass::ALL
                .into_iter()
                .map(|c| {
                    let bucket = account_quota(c).share(DEFAULT_BURST_SHARE, DEFAULT_SHARE);
                    (c, bucket)
                })
                .collect(),
        }
    }
}

impl RateLimits {
    /// The defaults with overrides from `class=capacity/refill,...`, e.g.
    /// `ec2-run=4/1.5,elb-mutate=10/2`. An empty string means the defaults.
    pub fn parse(spec: &str) -> Result<RateLimits, String> {
        let mut limits = RateLimits::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, size) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not class=capacity/refill"))?;
            let class = QuotaClass::parse(name.trim()).ok_or_else(|| {
                let known: Vec<&str> = QuotaClass::ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown quota class {name:?} (known: {})", known.join(", "))
            })?;
            let (capacity, refill) = size
                .split_once('/')
                .ok_or_else(|| format!("{item:?} is not class=capacity/refill"))?;
            let capacity: u32 = capacity
                .trim()
                .parse()
                .ok()
                .filter(|c| *c > 0)
                .ok_or_else(|| format!("{item:?}: capacity must be a whole number above 0"))?;
            let refill: f64 = refill
                .trim()
                .parse()
                .ok()
                .filter(|r: &f64| r.is_finite() && *r > 0.0)
                .ok_or_else(|| {
                    format!("{item:?}: refill must be a number of tokens per second above 0")
                })?;
            limits.buckets.insert(class, Bucket::new(capacity, refill));
        }
        Ok(limits)
    }

    /// The effective sizes as `class=capacity/refill,...` (for logs and `--help`).
    pub fn describe(&self) -> String {
        self.buckets
            .iter()
            .map(|(c, b)| format!("{}={}/{}", c.as_str(), b.capacity, b.refill_per_second))
            .collect::<Vec<_>>()
            .join(",")
    }
}
