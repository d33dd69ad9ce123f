//! The OCI distribution client: a tag's manifest digest from any registry but ECR (ghcr.io,
//! Docker Hub, ...), with `HEAD /v2/<name>/manifests/<tag>` and the manifest media types in
//! `Accept`; the answer's `Docker-Content-Digest` is the digest. A 401 with
//! `WWW-Authenticate: Bearer realm=..,service=..,scope=..` is answered by the token dance: an
//! anonymous `GET realm?service=..&scope=..` for a pull token (`token` or `access_token` in the
//! JSON), then the HEAD again with it. Only public images: no credentials are configured.
//!
//! HTTPS with the system roots (rustls with aws-lc-rs, `crate::tls::client_config`); plain HTTP
//! only through [`RegistryClient::loopback_http`], which refuses any host but loopback (the tests'
//! registry). The token is never logged nor put in an error.

use crate::image::{ImageRef, is_sha256_digest};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// What `Accept` lists: an image index or a single manifest, OCI or Docker, so the digest is the
/// one `docker pull` records (a multi-architecture tag's index).
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// One resolution, token included, never takes longer.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest token answer read.
const MAX_TOKEN_BODY: usize = 64 * 1024;

/// Why a digest could not be resolved (never carries a token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resolving {image}: {why}")]
pub struct RegistryError {
    pub image: String,
    pub why: String,
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// A client of OCI distribution registries.
#[derive(Clone)]
pub struct RegistryClient {
    client: HttpsClient,
    /// `https`, or `http` for the loopback test registry.
    scheme: &'static str,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl RegistryClient {
    /// HTTPS with the system's roots.
    pub fn new() -> Result<RegistryClient, String> {
        Ok(RegistryClient::build(
            crate::tls::client_config(None, true)?,
            "https",
        ))
    }

    /// Plain HTTP to a registry on 127.0.0.1, `localhost` or `[::1]` only (the tests' registry);
    /// any other host is refused.
    pub fn loopback_http() -> Result<RegistryClient, String> {
        Ok(RegistryClient::build(
            crate::tls::client_config(None, false)?,
            "http",
        ))
    }

    fn build(tls: rustls::ClientConfig, scheme: &'static str) -> RegistryClient {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        RegistryClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            scheme,
        }
    }

    /// The digest (`sha256:...`) the registry gives `image`'s tag (`latest` when it has none).
    pub async fn digest(&self, image: &ImageRef) -> Result<String, RegistryError> {
        let fail = |why: String| RegistryError {
            image: format!(
                "{}/{}:{}",
                image.registry,
                image.repository,
                image.tag_or_latest()
            ),
            why,
        };
        tokio::time::timeout(RESOLVE_TIMEOUT, self.resolve(image))
            .await
            .map_err(|_| fail(format!("no answer within {RESOLVE_TIMEOUT:?}")))?
            .map_err(fail)
    }

    async fn resolve(&self, image: &ImageRef) -> Result<String, String> {
        let host = image.api_host();
        if self.scheme == "http" && !is_loopback(host) {
            return Err(format!(
                "plain HTTP is only for loopback registries, not {host}"
            ));
        }
        let url = format!(
            "{}://{host}/v2/{}/manifests/{}",
            self.scheme,
            image.repository,
            image.tag_or_latest()
        );
        let first = self.head(&url, None).await?;
        let answer = if first.status() == hyper::StatusCode::UNAUTHORIZED {
            let challenge = header(&first, "www-authenticate").unwrap_or_default();
            let token = self.token(&challenge, &image.repository).await?;
            self.head(&url, Some(&token)).await?
        } else {
            first
        };
        match answer.status().as_u16() {
            200 => {}
            404 => return Err("the registry does not know this tag (404)".into()),
            status => return Err(format!("the registry answered {status}")),
        }
        let digest = header(&answer, "docker-content-digest")
            .ok_or("the registry sent no Docker-Content-Digest")?;
        if !is_sha256_digest(&digest) {
            return Err(format!("the registry sent an unusable digest {digest:?}"));
        }
        Ok(digest)
    }

    async fn head(
        &self,
        url: &str,
        token: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let mut request = hyper::Request::head(url).header("accept", MANIFEST_TYPES);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| format!("building the request: {e}"))?;
        self.client
            .request(request)
            .await
            .map_err(|e| format!("the registry is unreachable: {e}"))
    }

    /// An anonymous pull token from the `Bearer` challenge's realm.
    async fn token(&self, challenge: &str, repository: &str) -> Result<String, String> {
        let params = bearer_params(challenge)
            .ok_or("the registry asks for authentication other than a Bearer token")?;
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let realm = param("realm").ok_or("the registry's Bearer challenge names no realm")?;
        let realm_ok = match realm.split_once("://") {
            Some(("https", _)) => true,
            Some(("http", rest)) => {
                self.scheme == "http" && is_loopback(rest.split('/').next().unwrap_or(""))
            }
            _ => false,
        };
        if !realm_ok {
            return Err(format!("the token realm {realm} is not an HTTPS address"));
        }
        let scope = param("scope").unwrap_or_else(|| format!("repository:{repository}:pull"));
        let mut url = format!("{realm}?scope={}", crate::url::component(&scope));
        if let Some(service) = param("service") {
            url.push_str(&format!("&service={}", crate::url::component(&service)));
        }
        let request = hyper::Request::get(&url)
            .body(Empty::new())
            .map_err(|e| format!("building the token request: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("the token service is unreachable: {e}"))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(format!(
                "the token service answered {}",
                response.status().as_u16()
            ));
        }
        let body = Limited::new(response.into_body(), MAX_TOKEN_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the token answer: {e}"))?
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| "the token service's answer is not JSON".to_string())?;
        json.get("token")
            .or_else(|| json.get("access_token"))
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .ok_or_else(|| "the token service's answer holds no token".to_string())
    }
}

fn header<B>(response: &hyper::Response<B>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `127.0.0.1[:port]`, `localhost[:port]` or `[::1][:port]`.
fn is_loopback(host: &str) -> bool {
    let name = if host.starts_with('[') {
        host.split(']')
            .next()
            .map(|h| format!("{h}]"))
            .unwrap_or_default()
    } else {
        host.split(':').next().unwrap_or("").to_string()
    };
    matches!(name.as_str(), "127.0.0.1" | "localhost" | "[::1]")
}

/// The parameters of a `Bearer k="v",k2="v2"` challenge; None for another scheme.
pub(crate) fn bearer_params(challenge: &str) -> Option<Vec<(String, String)>> {
    let (scheme, rest) = challenge.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect();
        }
        params.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Some(params)
}
