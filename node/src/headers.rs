//! Header lookups on the small maps requests carry.

use http::{HeaderMap, HeaderName, HeaderValue};

/// Up to this many header values, a lookup compares names instead of hashing one (`header`).
const SCAN_HEADERS: usize = 8;

/// The first value of header `name`, as `HeaderMap::get` gives it. A request carries a few
/// headers, and comparing each name costs less than the map's lookup, which hashes a custom
/// name (`Rcluster-Token`) byte by byte: every request looks up five to seven names, most of
/// them absent.
pub fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    if headers.len() > SCAN_HEADERS {
        return headers.get(name);
    }
    headers.iter().find_map(|(n, v)| (n == name).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> HeaderName {
        HeaderName::from_static("rcluster-token")
    }

    /// The scan answers what the map's lookup answers: the first value of a name given several,
    /// nothing for an absent one, in maps small enough to scan and larger ones alike.
    #[test]
    fn a_header_is_found_as_the_map_finds_it() {
        let names = [
            token(),
            HeaderName::from_static("idempotency-key"),
            http::header::AUTHORIZATION,
            http::header::CONTENT_LENGTH,
            HeaderName::from_static("x-other"),
        ];
        for extra in [0, 3, 7, 8, 9, 20] {
            let mut h = HeaderMap::new();
            h.append(http::header::HOST, HeaderValue::from_static("h"));
            h.append(token(), HeaderValue::from_static("1"));
            h.append(token(), HeaderValue::from_static("2"));
            h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("3"));
            for i in 0..extra {
                let name = HeaderName::from_bytes(format!("x-filler-{i}").as_bytes()).unwrap();
                h.append(name, HeaderValue::from_static("f"));
            }
            for name in &names {
                assert_eq!(
                    header(&h, name),
                    h.get(name),
                    "{name} among {} values",
                    h.len()
                );
            }
            assert_eq!(header(&h, &token()).unwrap(), "1");
        }
    }
}
