//! ECR: the digest of the container image's tag (DescribeImages), for pinning it.

use super::AwsCloud;
use super::errors::{call, with_context};
use crate::cloud::{CloudError, CloudErrorKind, CloudResult};
use crate::image::EcrImage;

impl AwsCloud {
    pub(super) async fn ecr_image_digest(&self, image: &EcrImage) -> CloudResult<String> {
        // The repository's region, which need not be the daemon's.
        let region = aws_sdk_ecr::config::Builder::default()
            .region(aws_sdk_ecr::config::Region::new(image.region.clone()));
        let output = call(
            "ecr",
            "DescribeImages",
            self.ecr
                .describe_images()
                .registry_id(&image.registry_id)
                .repository_name(&image.repository)
                .image_ids(
                    aws_sdk_ecr::types::ImageIdentifier::builder()
                        .image_tag(&image.tag)
                        .build(),
                )
                .customize()
                .config_override(region)
                .send(),
        )
        .await
        .map_err(|err| {
            with_context(
                err,
                format!("reading the digest of {}:{}", image.repository, image.tag),
            )
        })?;
        output
            .image_details()
            .iter()
            .find_map(|detail| detail.image_digest())
            .map(str::to_string)
            .ok_or_else(|| {
                CloudError::new(
                    CloudErrorKind::NotFound,
                    "DescribeImages",
                    "ImageNotFoundException",
                    format!("no digest for {}:{}", image.repository, image.tag),
                )
            })
    }
}
