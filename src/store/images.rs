//! The images' pinned digests (`image_pins`): written once per image string by the reconciler,
//! read by it and every API replica.

use super::{Store, StoreResult};
use crate::model::{ImagePin, Millis};
use sqlx::Row;

impl Store {
    /// Records `digest` for `image` unless it already has a pin, and returns the pin that holds:
    /// the first one recorded wins, so two replicas resolving at once agree.
    pub async fn pin_image(&self, image: &str, digest: &str, now: Millis) -> StoreResult<ImagePin> {
        execute!(
            self,
            sqlx::query(
                "INSERT INTO image_pins (image, digest, resolved_at) VALUES ($1, $2, $3)
                 ON CONFLICT (image) DO NOTHING",
            )
            .bind(image)
            .bind(digest)
            .bind(now)
        );
        self.image_pin(image).await?.ok_or_else(|| {
            super::StoreError::Corrupt(format!("the pin of {image} vanished as it was written"))
        })
    }

    /// The pin of `image`, if it has one.
    pub async fn image_pin(&self, image: &str) -> StoreResult<Option<ImagePin>> {
        on_pool!(self, |pool| {
            let row =
                sqlx::query("SELECT image, digest, resolved_at FROM image_pins WHERE image = $1")
                    .bind(image)
                    .fetch_optional(pool)
                    .await?;
            row.map(|r| {
                Ok(ImagePin {
                    image: r.try_get("image")?,
                    digest: r.try_get("digest")?,
                    resolved_at: r.try_get("resolved_at")?,
                })
            })
            .transpose()
        })
    }

    /// Forgets the pin of `image` (on-call's re-pin); whether there was one. The next pass
    /// resolves the image again.
    pub async fn unpin_image(&self, image: &str) -> StoreResult<bool> {
        let done = execute!(
            self,
            sqlx::query("DELETE FROM image_pins WHERE image = $1").bind(image)
        );
        Ok(done > 0)
    }
}
