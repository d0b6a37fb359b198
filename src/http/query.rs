//! Query strings, percent-decoded.

/// Every `name=value` pair, decoded (`+` is a space, as in forms).
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// The first value of `name`.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query_pairs(query)
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_and_decoded() {
        assert_eq!(
            query_param("a=1&api-version=2023-10-01", "api-version").as_deref(),
            Some("2023-10-01")
        );
        assert_eq!(
            query_param("api-version=2023%2D10%2D01", "api-version").as_deref(),
            Some("2023-10-01")
        );
        assert_eq!(query_param("api-versions=x", "api-version"), None);
        assert_eq!(query_param("", "api-version"), None);
        assert_eq!(
            query_pairs("a=1&&b"),
            vec![("a".into(), "1".into()), ("b".into(), String::new())]
        );
        assert_eq!(
            query_pairs("from=2026-01-01T00%3A00%3A00%2B01%3A00")[0].1,
            "2026-01-01T00:00:00+01:00"
        );
    }
}
