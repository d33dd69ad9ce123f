//! The account quotas the pool depends on (Service Quotas codes), and what the tiers' maxima need
//! of the spot vCPU ones.
//!
//! EC2 counts running and requested spot instances in vCPUs per family group ("All Standard (A,
//! C, D, H, I, M, R, T, Z) Spot Instance Requests" and the others), per account and region. A new
//! account's standard quota can be 5 vCPUs: two t3.small and the third launch fails with
//! `MaxSpotInstanceCountExceeded`. The daemon reads these at start-up and hourly, refuses tier
//! maxima the quota cannot hold, and exposes the headroom as metrics (`docs/DEPLOY.md`).

use std::collections::BTreeMap;

/// A spot vCPU quota's family group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpotFamily {
    Standard,
    GAndVt,
    /// P2, P3, P4.
    P,
    P5,
    F,
    X,
    Inf,
    Dl,
    Trn,
}

impl SpotFamily {
    /// The family group of an instance type (`t3.small` → Standard); `None` for one EC2 does
    /// not sell as spot under these quotas (or a malformed name).
    pub fn of(instance_type: &str) -> Option<SpotFamily> {
        let family = instance_type.split('.').next()?.to_ascii_lowercase();
        let prefixed = [
            ("inf", SpotFamily::Inf),
            ("trn", SpotFamily::Trn),
            ("dl", SpotFamily::Dl),
            ("vt", SpotFamily::GAndVt),
            ("p5", SpotFamily::P5),
            ("p6", SpotFamily::P5),
        ];
        if let Some((_, group)) = prefixed.iter().find(|(p, _)| family.starts_with(p)) {
            return Some(*group);
        }
        match family.chars().next()? {
            'a' | 'c' | 'd' | 'h' | 'i' | 'm' | 'r' | 't' | 'z' => Some(SpotFamily::Standard),
            'g' => Some(SpotFamily::GAndVt),
            'p' => Some(SpotFamily::P),
            'f' => Some(SpotFamily::F),
            'x' => Some(SpotFamily::X),
            _ => None,
        }
    }
}

/// One quota the pool depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Quota {
    SpotVcpus(SpotFamily),
    /// Application Load Balancers per region.
    AlbsPerRegion,
    /// Target groups per region: one per routed user.
    TargetGroupsPerRegion,
    /// Listener rules per ALB (default rules excluded): one per user.
    RulesPerAlb,
    /// Target groups per ALB (not adjustable): one per routed user.
    TargetGroupsPerAlb,
}

impl Quota {
    /// The Service Quotas service code.
    pub fn service_code(self) -> &'static str {
        match self {
            Quota::SpotVcpus(_) => "ec2",
            _ => "elasticloadbalancing",
        }
    }

    /// The Service Quotas quota code.
    pub fn code(self) -> &'static str {
        match self {
            Quota::SpotVcpus(family) => match family {
                SpotFamily::Standard => "L-34B43A08",
                SpotFamily::GAndVt => "L-3819A6DF",
                SpotFamily::P => "L-7212CCBC",
                SpotFamily::P5 => "L-C4BD4855",
                SpotFamily::F => "L-88CF9481",
                SpotFamily::X => "L-E3A00192",
                SpotFamily::Inf => "L-B5D1601B",
                SpotFamily::Dl => "L-85EED4F7",
                SpotFamily::Trn => "L-6B0D517C",
            },
            Quota::AlbsPerRegion => "L-53DA6B97",
            Quota::TargetGroupsPerRegion => "L-B22855CB",
            Quota::RulesPerAlb => "L-7EED9B64",
            Quota::TargetGroupsPerAlb => "L-822D1B1B",
        }
    }

    /// The metrics label: `spot_vcpus_standard`, `target_groups_per_region`, ...
    pub fn label(self) -> &'static str {
        match self {
            Quota::SpotVcpus(family) => match family {
                SpotFamily::Standard => "spot_vcpus_standard",
                SpotFamily::GAndVt => "spot_vcpus_g_vt",
                SpotFamily::P => "spot_vcpus_p",
                SpotFamily::P5 => "spot_vcpus_p5",
                SpotFamily::F => "spot_vcpus_f",
                SpotFamily::X => "spot_vcpus_x",
                SpotFamily::Inf => "spot_vcpus_inf",
                SpotFamily::Dl => "spot_vcpus_dl",
                SpotFamily::Trn => "spot_vcpus_trn",
            },
            Quota::AlbsPerRegion => "albs_per_region",
            Quota::TargetGroupsPerRegion => "target_groups_per_region",
            Quota::RulesPerAlb => "rules_per_alb",
            Quota::TargetGroupsPerAlb => "target_groups_per_alb",
        }
    }

    /// The quotas a pool of these instance types depends on: its spot families', and the load
    /// balancer's.
    pub fn needed_by<'a>(instance_types: impl IntoIterator<Item = &'a str>) -> Vec<Quota> {
        let mut quotas: Vec<Quota> = instance_types
            .into_iter()
            .filter_map(SpotFamily::of)
            .map(Quota::SpotVcpus)
            .collect();
        quotas.extend([
            Quota::AlbsPerRegion,
            Quota::TargetGroupsPerRegion,
            Quota::RulesPerAlb,
            Quota::TargetGroupsPerAlb,
        ]);
        quotas.sort();
        quotas.dedup();
        quotas
    }
}

/// One tier's sizing, as the spot vCPU check needs it.
#[derive(Debug, Clone)]
pub struct TierSize<'a> {
    pub tier: &'a str,
    pub max_instances: u32,
    pub instance_types: &'a [String],
}

/// The spot vCPUs the tiers could hold at their maxima, per family group: for each tier and
/// family, its maximum times the largest of its types of that family (any of them may be what
/// capacity allows), summed over the tiers. Types without a known vCPU count are left out.
pub fn spot_vcpus_needed(
    tiers: &[TierSize<'_>],
    vcpus: &BTreeMap<String, u32>,
) -> BTreeMap<SpotFamily, u64> {
    let mut needed = BTreeMap::new();
    for tier in tiers {
        let mut largest: BTreeMap<SpotFamily, u32> = BTreeMap::new();
        for instance_type in tier.instance_types {
            if let (Some(family), Some(&count)) =
                (SpotFamily::of(instance_type), vcpus.get(instance_type))
            {
                let entry = largest.entry(family).or_default();
                *entry = (*entry).max(count);
            }
        }
        for (family, count) in largest {
            *needed.entry(family).or_default() += u64::from(tier.max_instances) * u64::from(count);
        }
    }
    needed
}

/// Every family whose quota cannot hold what the tiers need, as one message each, naming the
/// quota, the numbers and the way out. Quotas not read (`limits` lacks them) are not judged.
pub fn spot_shortfalls(
    tiers: &[TierSize<'_>],
    vcpus: &BTreeMap<String, u32>,
    limits: &BTreeMap<Quota, f64>,
) -> Vec<String> {
    let needed = spot_vcpus_needed(tiers, vcpus);
    let mut problems = Vec::new();
    for (family, need) in needed {
        let quota = Quota::SpotVcpus(family);
        let Some(&limit) = limits.get(&quota) else {
            continue;
        };
        if need as f64 <= limit {
            continue;
        }
        let sizes: Vec<String> = tiers
            .iter()
            .filter(|t| {
                t.instance_types
                    .iter()
                    .any(|i| SpotFamily::of(i) == Some(family))
            })
            .map(|t| {
                format!(
                    "tier {} max {} of {}",
                    t.tier,
                    t.max_instances,
                    t.instance_types.join(",")
                )
            })
            .collect();
        problems.push(format!(
            "the tiers' maxima ({}) need {need} spot vCPUs of quota {} ({}), but the account's \
             quota in this region is {limit}: lower POOL_MAX_INSTANCES (or the tier's max) or \
             request an increase in Service Quotas",
            sizes.join("; "),
            quota.code(),
            quota.label(),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_follow_the_quota_groups() {
        for (instance_type, family) in [
            ("t3.small", Some(SpotFamily::Standard)),
            ("m7i.large", Some(SpotFamily::Standard)),
            ("c7g.xlarge", Some(SpotFamily::Standard)),
            ("z1d.large", Some(SpotFamily::Standard)),
            ("g5.xlarge", Some(SpotFamily::GAndVt)),
            ("vt1.3xlarge", Some(SpotFamily::GAndVt)),
            ("p4d.24xlarge", Some(SpotFamily::P)),
            ("p5.48xlarge", Some(SpotFamily::P5)),
            ("inf2.xlarge", Some(SpotFamily::Inf)),
            ("trn1.2xlarge", Some(SpotFamily::Trn)),
            ("dl1.24xlarge", Some(SpotFamily::Dl)),
            ("x2idn.large", Some(SpotFamily::X)),
            ("f1.2xlarge", Some(SpotFamily::F)),
            ("u-6tb1.metal", None),
            ("", None),
        ] {
            assert_eq!(SpotFamily::of(instance_type), family, "{instance_type}");
        }
    }

    #[test]
    fn a_maximum_beyond_the_quota_is_named_with_the_numbers() {
        let small = vec!["t3.small".to_string(), "t3.medium".to_string()];
        let gpu = vec!["g5.xlarge".to_string()];
        let vcpus = BTreeMap::from([
            ("t3.small".to_string(), 2),
            ("t3.medium".to_string(), 2),
            ("g5.xlarge".to_string(), 4),
        ]);
        let tiers = [
            TierSize {
                tier: "default",
                max_instances: 10,
                instance_types: &small,
            },
            TierSize {
                tier: "pro",
                max_instances: 3,
                instance_types: &gpu,
            },
        ];
        let needed = spot_vcpus_needed(&tiers, &vcpus);
        assert_eq!(needed[&SpotFamily::Standard], 20);
        assert_eq!(needed[&SpotFamily::GAndVt], 12);
        // Exactly at the quota holds; one vCPU less does not.
        let limits = BTreeMap::from([
            (Quota::SpotVcpus(SpotFamily::Standard), 20.0),
            (Quota::SpotVcpus(SpotFamily::GAndVt), 11.0),
        ]);
        let problems = spot_shortfalls(&tiers, &vcpus, &limits);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("need 12 spot vCPUs"),
            "{}",
            problems[0]
        );
        assert!(problems[0].contains("L-3819A6DF"), "{}", problems[0]);
        assert!(problems[0].contains("tier pro max 3"), "{}", problems[0]);
        // A quota that was not read is not judged.
        assert!(spot_shortfalls(&tiers, &vcpus, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn the_needed_quotas_are_the_families_and_the_load_balancers() {
        let quotas = Quota::needed_by(["t3.small", "t3a.small", "g5.xlarge"]);
        assert_eq!(
            quotas,
            vec![
                Quota::SpotVcpus(SpotFamily::Standard),
                Quota::SpotVcpus(SpotFamily::GAndVt),
                Quota::AlbsPerRegion,
                Quota::TargetGroupsPerRegion,
                Quota::RulesPerAlb,
                Quota::TargetGroupsPerAlb,
            ]
        );
    }
}
