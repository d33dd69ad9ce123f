//! Where a callback may point: `https` to a public address only (unless private targets are
//! allowed: tests and local mode), checked when a PUT names it and again at every connect, on
//! the addresses the name resolves to then (so a name that later resolves into the VPC, or to
//! the metadata service, is refused at the moment it would be used).

use hyper_util::client::legacy::connect::dns::Name;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;

/// A callback URL, checked: its scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub uri: hyper::Uri,
    pub https: bool,
    pub host: String,
}

/// Checks a callback URL as a PUT gives it; the message says what is wrong (without the URL's
/// query, which may carry the receiver's token).
pub fn parse(url: &str, allow_private: bool) -> Result<Target, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "callback_url is longer than {MAX_URL_LEN} characters"
        ));
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|_| "callback_url is not an absolute URL".to_string())?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") if allow_private => false,
        Some("http") => {
            return Err(
                "callback_url must be https (plain http only with SPOTPOOL_WEBHOOK_ALLOW_PRIVATE)"
                    .into(),
            );
        }
        _ => return Err("callback_url must be an https URL".into()),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| "callback_url has no host".to_string())?;
    if authority.as_str().contains('@') {
        return Err("callback_url must not carry credentials (user:password@)".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err("callback_url has no host".into());
    }
    if let Ok(ip) = host.parse::<IpAddr>()
        && !allow_private
        && !is_public(ip)
    {
        return Err(format!(
            "callback_url's address {ip} is not public (private, loopback, link-local or \
             reserved addresses need SPOTPOOL_WEBHOOK_ALLOW_PRIVATE)"
        ));
    }
    Ok(Target {
        https,
        host: host.to_string(),
        uri,
    })
}

/// Whether `ip` is reachable on the public internet: not private, loopback, link-local (the
/// metadata service's 169.254.169.254 and fd00:ec2::254 among them), shared (CGNAT),
/// multicast, documentation, benchmarking or reserved; IPv6 forms that embed an IPv4 address
/// (mapped, NAT64, 6to4) are judged by it.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => public_v6(v6),
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return public_v4(v4);
    }
    let segments = ip.segments();
    let embedded = |high: u16, low: u16| {
        Ipv4Addr::new((high >> 8) as u8, high as u8, (low >> 8) as u8, low as u8)
    };
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they carry.
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return public_v4(embedded(segments[6], segments[7]));
    }
    if segments[0] == 0x2002 {
        return public_v4(embedded(segments[1], segments[2]));
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00
        || (segments[0] & 0xffc0) == 0xfe80
        || (segments[0] == 0x2001 && segments[1] == 0x0db8)
        || segments[..6] == [0, 0, 0, 0, 0, 0])
}

/// The resolver the webhook client connects through: the system's, keeping only public
/// addresses unless private ones are allowed. A name with no public address fails the
/// connect, and the attempt is retried later like any other failure.
#[derive(Clone, Copy, Debug)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

type Resolving =
    Pin<Box<dyn Future<Output = std::io::Result<std::vec::IntoIter<SocketAddr>>> + Send>>;

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (kept, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = found
                .into_iter()
                .partition(|addr| allow_private || is_public(addr.ip()));
            if kept.is_empty() {
                // The addresses go to the log only: the error is stored and journalled, where
                // the service token could read which private addresses a name has.
                let refused: Vec<String> = refused.iter().map(|a| a.ip().to_string()).collect();
                tracing::warn!(%host, refused = %refused.join(", "), "a webhook's host resolves to no public address");
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("{host} resolves to no public address"),
                ));
            }
            Ok(kept.into_iter())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.2.1",
            "240.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::",
            "2001:db8::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private} passed");
        }
        for public in [
            "1.1.1.1",
            "52.94.236.248",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public} refused");
        }
    }

    #[test]
    fn a_callback_url_must_be_https_to_a_public_host_without_credentials() {
        let ok = parse("https://hooks.example.com/spotpool?token=x", false).unwrap();
        assert!(ok.https);
        assert_eq!(ok.host, "hooks.example.com");
        for (url, why) in [
            ("http://hooks.example.com/", "must be https"),
            ("ftp://hooks.example.com/", "must be an https URL"),
            ("/relative", "must be an https URL"),
            ("https://user:pw@hooks.example.com/", "credentials"),
            ("https://169.254.169.254/latest/meta-data/", "not public"),
            ("https://[fd00:ec2::254]/", "not public"),
            ("https://10.1.2.3:8443/", "not public"),
            ("not a url", "not an absolute URL"),
        ] {
            let error = parse(url, false).unwrap_err();
            assert!(error.contains(why), "{url}: {error}");
            assert!(!error.contains("token=x"), "{error}");
        }
        let long = format!("https://a.example.com/{}", "x".repeat(MAX_URL_LEN));
        assert!(parse(&long, false).unwrap_err().contains("longer"));
        // Every character the served schema's pattern admits (api::openapi) is taken.
        let busy = "https://A-b.example.com:65535/p._~!$&'()*+,;=:@%/x?q=._~!$&'()*+,;=:@%/?-";
        assert!(parse(busy, false).is_ok(), "{busy}");
        // Allowed private targets: plain http to loopback (the tests' receivers).
        let local = parse("http://127.0.0.1:8080/hook", true).unwrap();
        assert!(!local.https);
    }

    #[tokio::test]
    async fn the_resolver_refuses_a_name_with_only_private_addresses() {
        use tower_service::Service;
        let name: Name = "localhost".parse().unwrap();
        let error = GuardedResolver {
            allow_private: false,
        }
        .call(name.clone())
        .await
        .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::PermissionDenied);
        assert!(error.to_string().contains("no public address"), "{error}");
        let allowed: Vec<SocketAddr> = GuardedResolver {
            allow_private: true,
        }
        .call(name)
        .await
        .unwrap()
        .collect();
        assert!(allowed.iter().all(|a| a.ip().is_loopback()), "{allowed:?}");
        assert!(!allowed.is_empty());
    }
}
