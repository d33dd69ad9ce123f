//! The integration tests: one binary, with shared helpers.
//!
//! - `architecture`: ARCHITECTURE.md's code map and limits against the source tree.
//! - `reconcile`: the reconciler, API and store over the in-memory fake cloud (`world`).
//! - `faults`: 500 claims and releases over the simulated fake (`aws-profile.md` with 5xx,
//!   throttling and capacity errors) on tokio's paused clock.
//! - `spares_daemon`: the launch-day spike of `examples/spares_day.rs`'s trace on the same
//!   harness, `spare = "auto"` against fixed spare counts (an ignored benchmark).
//! - `aws_adapter`: `AwsCloud` against moto through the real SDK path.
//! - `interruptions`: the interruption queue consumer against an SQS queue in moto.
//! - `e2e`: moto, the minimal infrastructure and the real `spotpool` binary (`daemon`).
//! - `e2e_shards`: the same with two load balancers as two `[[shard]]` tables (path and host
//!   routing): six users placed three and three, the seventh waits as `no_route_capacity`.
//! - `fault_proxy`: the same, with a proxy in front of moto that answers a share of the calls
//!   with throttling errors and 500s.
//! - `workspace`: users' EBS workspaces on the fake: claims, moves, sleep and wake, recovery,
//!   relocation to another zone, deletion.
//! - `terraform`: the example root applied against moto with Terraform, the real binary started
//!   from its outputs, and `terraform destroy`; there the applied IAM policies are evaluated
//!   (`iam_policy`, a small IAM evaluator) against the requests of every call the daemon makes
//!   (`iam_requests`) and linted with parliament.
//! - `tls`: the binary serving its API over HTTPS, the CLI as its client, certificate reloads.
//! - `quotas`: account quotas on the fake: launches a quota refuses, the start-up check.
//! - `shards`: users spread over load balancers on the fake (which enforces AWS's load balancer
//!   limits): `no_route_capacity`, a load balancer's refusal that spends no instance, host
//!   routing.
//! - `images`: the container image pinned by digest on the fake: once per image string, probes
//!   and starts by digest, a registry outage.
//! - `migrate_store`: `spotpool migrate-store`, the real binary: a SQLite store with rows in
//!   every table copied into PostgreSQL and compared row for row (and back), its refusals, and
//!   10,000 users copied in seconds.
//! - `postgres`: the PostgreSQL store under the reconciler, as a smoke test: a world (claims, a
//!   rolled-back step, a restart, a release) and the real binary over moto (a claim, SIGKILL, a
//!   restart that launches nothing extra); the store's own suite runs on both stores.
//! - `warm_responder`: the spares' warm responder (`terraform/modules/spotpool/
//!   warm-responder.py`) run with python3 on a loopback port: its answers and its SIGTERM.

mod admin;
mod architecture;
mod auto_spares;
mod aws_adapter;
mod baseline;
mod cost;
mod crash;
mod daemon;
mod dashboard;
mod drains;
mod e2e;
mod e2e_cost;
mod e2e_drain;
mod e2e_events;
mod e2e_prewired;
mod e2e_shards;
mod e2e_shared;
mod e2e_tiers;
mod e2e_webhooks;
mod events;
mod fault_proxy;
mod faults;
mod health;
mod iam_policy;
mod iam_requests;
mod images;
mod interruptions;
mod isolation;
mod migrate_store;
mod postgres;
mod quotas;
mod receiver;
mod reconcile;
mod rollouts;
mod shards;
mod shared;
mod shared_moves;
mod spares_daemon;
mod spot;
mod spot_sim;
mod support;
mod sustained;
mod takeover;
mod terraform;
mod tiers;
mod tls;
mod warm_responder;
mod webhooks;
mod workspace;
mod world;
