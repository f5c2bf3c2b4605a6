//! The URL forms members listen on, advertise and record.

use std::net::SocketAddr;

/// A URL that does not name a socket address to listen on.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{0}: only http:// and https:// URLs are supported")]
    Scheme(String),
    #[error("{url}: {source}")]
    Addr {
        url: String,
        #[source]
        source: std::net::AddrParseError,
    },
}

/// Where a URL's server should listen: `http(s)://host:port` → socket address.
pub fn url_addr(url: &str) -> Result<SocketAddr, UrlError> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| UrlError::Scheme(url.to_string()))?;
    let hostport = rest.trim_end_matches('/');
    let hostport = if let Some(p) = hostport.strip_prefix("localhost:") {
        format!("127.0.0.1:{p}")
    } else {
        hostport.to_string()
    };
    hostport.parse().map_err(|source| UrlError::Addr {
        url: url.to_string(),
        source,
    })
}

/// The host of an `http(s)://host:port` URL (without brackets for an IPv6 address).
pub fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split(']').next().map(str::to_string);
    }
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    (!host.is_empty()).then(|| host.to_string())
}

/// `scheme://host:port`, optionally with a trailing `/`, and nothing else: no path, query, user
/// info or blanks. What a member record may hold, since other members and proxies connect to it.
pub fn is_host_port_url(url: &str, scheme: &str) -> bool {
    let Some(rest) = url.strip_prefix(scheme) else {
        return false;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    let port_ok = authority
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    port_ok && !authority.contains(['/', '?', '#', '@', ' ', '\t', '\n', '\r'])
}

pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_hosts_drop_scheme_port_path_and_brackets() {
        assert_eq!(
            url_host("http://10.0.0.1:7001").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            url_host("https://n1.example:7001/").as_deref(),
            Some("n1.example")
        );
        assert_eq!(url_host("https://[::1]:7001").as_deref(), Some("::1"));
        assert_eq!(url_host("http://host").as_deref(), Some("host"));
        assert_eq!(url_host("ftp://host:1"), None);
        assert_eq!(url_host("http://:1"), None);
    }

    #[test]
    fn url_addr_parses_listen_urls() {
        assert_eq!(url_addr("http://127.0.0.1:4001").unwrap().port(), 4001);
        assert_eq!(url_addr("http://localhost:4001/").unwrap().port(), 4001);
        assert_eq!(url_addr("https://127.0.0.1:1").unwrap().port(), 1);
        assert!(matches!(
            url_addr("ftp://127.0.0.1:1"),
            Err(UrlError::Scheme(_))
        ));
        assert!(matches!(
            url_addr("http://host.example:1"),
            Err(UrlError::Addr { .. })
        ));
    }
}
