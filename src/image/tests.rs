use super::*;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

#[test]
fn references_are_parsed_as_docker_reads_them() {
    let ghcr = ImageRef::parse("ghcr.io/openclaw/openclaw:latest").unwrap();
    assert_eq!(ghcr.registry, "ghcr.io");
    assert_eq!(ghcr.repository, "openclaw/openclaw");
    assert_eq!(ghcr.tag.as_deref(), Some("latest"));
    assert_eq!(
        ghcr.pinned(DIGEST),
        format!("ghcr.io/openclaw/openclaw@{DIGEST}")
    );
    let hub = ImageRef::parse("img:1").unwrap();
    assert_eq!(
        (hub.registry.as_str(), hub.repository.as_str()),
        ("docker.io", "library/img")
    );
    assert_eq!(hub.api_host(), "registry-1.docker.io");
    assert_eq!(hub.pinned(DIGEST), format!("img@{DIGEST}"));
    let port = ImageRef::parse("localhost:5000/team/app").unwrap();
    assert_eq!(
        (port.registry.as_str(), port.tag_or_latest()),
        ("localhost:5000", "latest")
    );
    let pinned = ImageRef::parse(&format!("ghcr.io/a/b:1@{DIGEST}")).unwrap();
    assert_eq!(pinned.digest.as_deref(), Some(DIGEST));
    assert!(ImageRef::parse("ghcr.io/a/b@sha256:short").is_err());
    assert!(ImageRef::parse("ghcr.io/a/b:").is_err());
}

#[test]
fn only_ecr_registries_are_ecr_images() {
    let ecr = ImageRef::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/openclaw:1.2.3")
        .unwrap()
        .ecr()
        .unwrap();
    assert_eq!(
        ecr,
        EcrImage {
            registry_id: "123456789012".into(),
            region: "eu-west-1".into(),
            repository: "team/openclaw".into(),
            tag: "1.2.3".into(),
        }
    );
    for other in [
        "ghcr.io/openclaw/openclaw:latest",
        "12345.dkr.ecr.eu-west-1.amazonaws.com/x:1",
        "public.ecr.aws/team/app:1",
        "123456789012.dkr.ecr.eu-west-1.example.com/x:1",
    ] {
        assert_eq!(ImageRef::parse(other).unwrap().ecr(), None, "{other}");
    }
}

#[test]
fn bearer_challenges_are_read_with_quoted_commas() {
    let params = registry::bearer_params(
        r#"Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:a/b:pull,push""#,
    )
    .unwrap();
    assert_eq!(
        params,
        vec![
            ("realm".to_string(), "https://ghcr.io/token".to_string()),
            ("service".to_string(), "ghcr.io".to_string()),
            ("scope".to_string(), "repository:a/b:pull,push".to_string()),
        ]
    );
    assert_eq!(registry::bearer_params(r#"Basic realm="x""#), None);
}

/// A registry on 127.0.0.1 that wants an anonymous Bearer token (the token dance of
/// distribution's token authentication) and knows one tag, `openclaw/openclaw:latest`.
struct TestRegistry {
    address: String,
    requests: Arc<Mutex<Vec<String>>>,
}

const TOKEN: &str = "anonymous-pull-token";

impl TestRegistry {
    async fn start() -> TestRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (log, realm) = (requests.clone(), format!("http://{address}/token"));
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (log, realm) = (log.clone(), realm.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.unwrap() == 1
                    {
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
                    let line = head.lines().next().unwrap_or("").to_string();
                    log.lock().unwrap().push(line.clone());
                    let authorized = head.contains(&format!("authorization: bearer {TOKEN}"));
                    let accepts_index = head.contains("application/vnd.oci.image.index.v1+json");
                    let answer = if line.starts_with("get /token?scope=repository%3aopenclaw%2fopenclaw%3apull&service=test-registry ") {
                        let body = format!(r#"{{"token":"{TOKEN}"}}"#);
                        format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len())
                    } else if !authorized {
                        format!("HTTP/1.1 401 Unauthorized\r\nwww-authenticate: Bearer realm=\"{realm}\",service=\"test-registry\",scope=\"repository:openclaw/openclaw:pull\"\r\ncontent-length: 0\r\n\r\n")
                    } else if line == "head /v2/openclaw/openclaw/manifests/latest http/1.1" && accepts_index {
                        format!("HTTP/1.1 200 OK\r\ndocker-content-digest: {DIGEST}\r\ncontent-length: 0\r\n\r\n")
                    } else {
                        "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n".to_string()
                    };
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        TestRegistry { address, requests }
    }
}

#[tokio::test]
async fn a_tag_is_resolved_through_the_anonymous_token_dance() {
    let registry = TestRegistry::start().await;
    let client = RegistryClient::loopback_http().unwrap();
    let image = ImageRef::parse(&format!("{}/openclaw/openclaw:latest", registry.address)).unwrap();
    assert_eq!(client.digest(&image).await.unwrap(), DIGEST);
    let requests = registry.requests.lock().unwrap().clone();
    assert_eq!(
        requests,
        vec![
            "head /v2/openclaw/openclaw/manifests/latest http/1.1",
            "get /token?scope=repository%3aopenclaw%2fopenclaw%3apull&service=test-registry http/1.1",
            "head /v2/openclaw/openclaw/manifests/latest http/1.1",
        ]
    );
}

#[tokio::test]
async fn an_unknown_tag_or_a_registry_that_is_down_is_an_error_without_the_token() {
    let registry = TestRegistry::start().await;
    let client = RegistryClient::loopback_http().unwrap();
    let unknown = ImageRef::parse(&format!("{}/openclaw/openclaw:nope", registry.address)).unwrap();
    let error = client.digest(&unknown).await.unwrap_err();
    assert!(error.why.contains("404"), "{error}");
    assert!(!error.to_string().contains(TOKEN));
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down = format!("{}/a/b:1", closed.local_addr().unwrap());
    drop(closed);
    let error = client
        .digest(&ImageRef::parse(&down).unwrap())
        .await
        .unwrap_err();
    assert!(error.why.contains("unreachable"), "{error}");
}

#[tokio::test]
async fn plain_http_is_refused_beyond_loopback() {
    let client = RegistryClient::loopback_http().unwrap();
    let error = client
        .digest(&ImageRef::parse("ghcr.io/openclaw/openclaw:latest").unwrap())
        .await
        .unwrap_err();
    assert!(error.why.contains("only for loopback"), "{error}");
}
