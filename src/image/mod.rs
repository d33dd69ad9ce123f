//! Container image references and their pinning to a digest (issue 18): the configured image
//! (`ghcr.io/openclaw/openclaw:latest`) is resolved once to `name@sha256:...`, recorded in the
//! store (`image_pins`), and every probe and start after that uses the pinned reference, so every
//! spare runs the same bytes.
//!
//! Owns: parsing a reference ([`ImageRef::parse`]: registry, repository, tag, digest; Docker
//! Hub's implicit `docker.io/library/`), recognising an ECR repository ([`ImageRef::ecr`]), the
//! pinned reference text ([`ImageRef::pinned`]), and the OCI distribution client for every other
//! registry (`registry`). Must not: call AWS (an ECR image is resolved through the `Cloud` port's
//! `image_digest`), decide when to resolve (`reconcile/image.rs` does), or log a registry token.

pub mod registry;

pub use registry::{RegistryClient, RegistryError};

/// Docker Hub: how references without a registry name it, and the host its API answers on.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A parsed image reference: `[registry/]repository[:tag][@sha256:hex]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// The reference as configured, without tag or digest (`img`, `ghcr.io/openclaw/openclaw`).
    name: String,
    /// The registry host (with port): `docker.io` when the reference names none.
    pub registry: String,
    /// The repository inside the registry (`library/img` on Docker Hub).
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:<64 hex>` when the reference is already pinned.
    pub digest: Option<String>,
}

/// An image in Amazon ECR: `<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrImage {
    /// The registry id: the account that owns the repository.
    pub registry_id: String,
    pub region: String,
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    /// Parses `reference`; the error says what is wrong with it.
    pub fn parse(reference: &str) -> Result<ImageRef, String> {
        let (rest, digest) = match reference.split_once('@') {
            Some((rest, digest)) => {
                if !is_sha256_digest(digest) {
                    return Err(format!(
                        "{reference}: the digest is not sha256:<64 hex digits>"
                    ));
                }
                (rest, Some(digest.to_string()))
            }
            None => (reference, None),
        };
        // A tag is the part after the last ':' that comes after the last '/' (a registry port
        // comes before the first '/').
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if name.is_empty() || tag.as_deref() == Some("") || name.ends_with('/') {
            return Err(format!("{reference}: not an image reference"));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
            None => (DOCKER_HUB.to_string(), format!("library/{name}")),
        };
        Ok(ImageRef {
            name: name.to_string(),
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The tag to resolve: the reference's, else `latest` (what docker pulls).
    pub fn tag_or_latest(&self) -> &str {
        self.tag.as_deref().unwrap_or("latest")
    }

    /// `name@digest`: the reference docker runs once the image is pinned (no tag: a tag next to
    /// a digest is ignored by docker and would only mislead a reader).
    pub fn pinned(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name)
    }

    /// The host the registry's API answers on (Docker Hub's differs from its name).
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// The ECR repository this reference names, if its registry is an ECR registry
    /// (`<12 digits>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`).
    pub fn ecr(&self) -> Option<EcrImage> {
        let host = self.registry.strip_suffix(".cn").unwrap_or(&self.registry);
        let host = host.strip_suffix(".amazonaws.com")?;
        let (account, rest) = host.split_once('.')?;
        let region = rest
            .strip_prefix("dkr.ecr.")
            .or_else(|| rest.strip_prefix("dkr.ecr-fips."))?;
        let plain = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        (account.len() == 12
            && account.bytes().all(|b| b.is_ascii_digit())
            && !region.is_empty()
            && plain(region))
        .then(|| EcrImage {
            registry_id: account.to_string(),
            region: region.to_string(),
            repository: self.repository.clone(),
            tag: self.tag_or_latest().to_string(),
        })
    }
}

/// `sha256:` and 64 lowercase hex digits.
pub fn is_sha256_digest(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

#[cfg(test)]
mod tests;
