//! Percent-encoding of one URL component (a path segment, a query value) for the clients: the
//! CLI's admin paths and the registry's token query. RFC 3986's unreserved characters stay as
//! they are; everything else is encoded, so a segment stays one segment.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` as one URL component.
pub fn component(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn unreserved_characters_stay_and_the_rest_is_encoded() {
        assert_eq!(super::component("a-Z_0.9~"), "a-Z_0.9~");
        assert_eq!(
            super::component("repository:a/b:pull x"),
            "repository%3Aa%2Fb%3Apull%20x"
        );
        assert_eq!(super::component("é"), "%C3%A9");
    }
}
