//! The `Spotpool-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`,
//! keyed with `SPOTPOOL_WEBHOOK_SECRET` (aws-lc-rs, the crypto the TLS stack already uses). A
//! receiver recomputes it over the raw body and refuses an old `t` (docs/DEPLOY.md,
//! "Webhooks").

use aws_lc_rs::hmac;

/// The header's value for `body` sent at `unix_seconds`.
pub fn signature(key: &[u8], unix_seconds: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut context = hmac::Context::with_key(&key);
    context.update(unix_seconds.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_seconds},v1={hex}")
}

#[cfg(test)]
mod tests {
    /// The value Python's `hmac.new(key, b"<t>.<body>", hashlib.sha256).hexdigest()` gives: an
    /// implementation other than the one under test.
    #[test]
    fn the_signature_is_an_hmac_sha256_of_the_time_and_the_body() {
        let body = br#"{"user_id":"u-1","state":"ready"}"#;
        assert_eq!(
            super::signature(b"0123456789abcdef0123456789abcdef", 1_764_662_400, body),
            "t=1764662400,v1=dc607c812b600af4852547c3f3a95ded3583271d26361b391754088e52914804"
        );
    }
}
