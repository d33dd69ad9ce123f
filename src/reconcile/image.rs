//! The container image the pool runs, pinned by digest (issue 18): the configured reference is
//! resolved once, recorded in the store (`image_pins`, first writer wins, so every replica and
//! every restart agrees), and every probe and start after that runs `name@sha256:...`.
//!
//! Owns: when to resolve (a pass whose image string has no pin; a failed resolution is tried
//! again after [`RESOLVE_RETRY`]), where from (an ECR image through the `Cloud` port's
//! DescribeImages, any other through the OCI distribution client; a reference that carries a
//! digest is its own pin), and [`Reconciler::image_to_run`]. Must not: re-resolve an image that
//! has a pin (on-call re-pins with `spotpool repin`, which deletes it), hand out a spare probed
//! before the pin (a new pin sends every spare back for a fresh probe), or stop a pass because a
//! registry is down: until the first pin, spares run the configured tag, and the log, the
//! `spotpool_image_pinned` gauge and `GET /v1/pool` say so.

use super::{Reconciler, StepError, one_tag};
use crate::cloud::tags;
use crate::image::{ImageRef, is_sha256_digest};
use crate::model::{Event, InstanceStatus, LaunchTemplate, Millis, TierVersions};
use crate::plan::TierPolicy;
use crate::store::{Store, StoreError};
use std::collections::HashMap;

/// How long after a failed resolution the next one is tried.
pub(super) const RESOLVE_RETRY: Millis = 60_000;

impl Reconciler {
    /// The reference probes and starts of `configured` (a tier's image) use: the pinned
    /// `name@digest`, or the configured reference while it has no pin.
    pub(super) async fn image_to_run(&self, configured: &str) -> Result<String, StoreError> {
        reference_to_run(&self.inner.store, configured).await
    }

    /// Pins every tier's image that has no pin yet.
    pub(super) async fn pin_images_if_needed(&self, now: Millis) -> Result<(), StoreError> {
        let tiers = self.tiers();
        let mut images: Vec<&str> = (tiers.iter())
            .map(|tier| tier.runtime.container.image.as_str())
            .collect();
        images.sort_unstable();
        images.dedup();
        for image in images {
            self.pin_image_if_needed(image, now).await?;
        }
        Ok(())
    }

    /// Pins `configured` if it has no pin yet; a failure only warns (the next try is
    /// [`RESOLVE_RETRY`] later).
    async fn pin_image_if_needed(&self, configured: &str, now: Millis) -> Result<(), StoreError> {
        let pinned = |value: f64| {
            metrics::gauge!("spotpool_image_pinned", "image" => configured.to_string()).set(value);
        };
        if self.inner.store.image_pin(configured).await?.is_some() {
            pinned(1.0);
            return Ok(());
        }
        {
            let mut retry_at = self
                .inner
                .image_retry_at
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let next = retry_at.entry(configured.to_string()).or_insert(0);
            if now < *next {
                return Ok(());
            }
            *next = now + RESOLVE_RETRY;
        }
        let digest = match self.resolve_image(configured).await {
            Ok(digest) => digest,
            Err(why) => {
                pinned(0.0);
                metrics::counter!("spotpool_image_resolution_failures_total").increment(1);
                tracing::warn!(
                    image = %configured,
                    error = %why,
                    "the container image is not pinned: spares run the tag until its digest \
                     resolves (tried again in a minute)"
                );
                return Ok(());
            }
        };
        let pin = self.inner.store.pin_image(configured, &digest, now).await?;
        pinned(1.0);
        if pin.digest == digest && pin.resolved_at == now {
            metrics::counter!("spotpool_image_pins_total").increment(1);
            let pinned = pinned_reference(configured, &pin.digest);
            let event = Event::ImagePinned {
                image: configured.to_string(),
                pinned,
            };
            if let Err(StepError::Store(e)) = self.journal(now, event, None, None).await {
                return Err(e);
            }
            self.reprobe_spares(configured, now).await?;
        }
        Ok(())
    }

    /// Spares of the tiers running `image` that passed their probe before its pin hold
    /// whatever the tag named at their boot: each goes back to `initializing` for a fresh
    /// probe, which pulls the pinned bytes if it lacks them, so no claim meets a spare without
    /// them.
    async fn reprobe_spares(&self, image: &str, now: Millis) -> Result<(), StoreError> {
        let store = &self.inner.store;
        let initializing = one_tag(tags::STATUS, InstanceStatus::Initializing.as_str());
        for spare in store.list_instances().await? {
            if spare.status != InstanceStatus::Available
                || self.runtime(&spare.tier).container.image != image
            {
                continue;
            }
            // The tag only mirrors the ledger for on-call; the probe's success rewrites it.
            let id = &spare.instance_id;
            if let Err(error) = self.inner.cloud.tag_instance(id, &initializing).await {
                tracing::debug!(instance = %id, %error, "could not tag a spare initializing");
            }
            let (from, to) = (InstanceStatus::Available, InstanceStatus::Initializing);
            store.transition_instance(id, from, to, now).await?;
        }
        Ok(())
    }

    /// The digest of `configured`: its own, ECR's (DescribeImages) or the registry's.
    async fn resolve_image(&self, configured: &str) -> Result<String, String> {
        let image = ImageRef::parse(configured)?;
        let digest = if let Some(digest) = image.digest.clone() {
            digest
        } else if let Some(ecr) = image.ecr() {
            let answer = self.inner.cloud.image_digest(&ecr).await;
            answer.map_err(|e| e.to_string())?
        } else if let Some(registry) = &self.inner.registry {
            registry.digest(&image).await.map_err(|e| e.to_string())?
        } else {
            return Err("no registry client to resolve images outside ECR".into());
        };
        if !is_sha256_digest(&digest) {
            return Err(format!("unusable digest {digest:?}"));
        }
        Ok(digest)
    }
}

/// The reference probes and starts of `configured` use: the pinned `name@digest`, or the
/// configured reference while it has no pin.
async fn reference_to_run(store: &Store, configured: &str) -> Result<String, StoreError> {
    Ok(match store.image_pin(configured).await? {
        Some(pin) => pinned_reference(configured, &pin.digest),
        None => configured.to_string(),
    })
}

/// What each of `tiers` runs now, for the `outdated` drains: its launch templates, and the image
/// reference a probe or start pulls now (the pinned one when `image` is pinned).
pub async fn tier_versions(
    store: &Store,
    tiers: &[TierPolicy],
) -> Result<HashMap<String, TierVersions>, StoreError> {
    let mut out = HashMap::new();
    for tier in tiers {
        let runtime = &tier.runtime;
        let configured = &runtime.container.image;
        let mut images = vec![configured.clone()];
        let pinned = reference_to_run(store, configured).await?;
        if &pinned != configured {
            images.push(pinned);
        }
        let launch_templates = std::iter::once(&runtime.launch)
            .chain(&runtime.on_demand)
            .map(LaunchTemplate::key)
            .collect();
        let versions = TierVersions {
            launch_templates,
            images,
        };
        out.insert(tier.name.clone(), versions);
    }
    Ok(out)
}

/// `name@digest` of the configured reference (its tag dropped); the reference itself if it
/// cannot be parsed (the configuration's check keeps that from happening).
fn pinned_reference(configured: &str, digest: &str) -> String {
    ImageRef::parse(configured).map_or_else(|_| configured.to_string(), |i| i.pinned(digest))
}
