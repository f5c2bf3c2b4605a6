//! Request scripts for the tests that send the same requests to etcd 3.4 and to Deimos and
//! compare the answers, written one request a line:
//!
//! ```text
//! # a comment
//! METHOD PATH [as USER:PASSWORD] [BODY]
//! ```
//!
//! PATH is below the server's URL and holds no space; BODY is the rest of the line, sent as
//! is (a form `value=1&ttl=5`, or JSON). Blank lines and `#` lines are skipped.

/// One scripted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// `user:password` for basic auth.
    pub creds: Option<&'a str>,
    pub body: Option<&'a str>,
    /// The line as written, for failure messages.
    pub line: &'a str,
}

/// Parse one line; panics on a line with no path (a typo in the script).
pub fn step(line: &str) -> Step<'_> {
    let line = line.trim();
    let (method, rest) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("script line without a path: {line:?}"));
    let (path, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    let (creds, body) = match rest.strip_prefix("as ") {
        Some(r) => {
            let (creds, body) = r.split_once(' ').unwrap_or((r, ""));
            (Some(creds), body)
        }
        None => (None, rest),
    };
    Step {
        method,
        path,
        creds,
        body: (!body.is_empty()).then_some(body),
        line,
    }
}

/// Every request of `script`, in order.
pub fn steps(script: &str) -> Vec<Step<'_>> {
    script
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(step)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_method_path_credentials_and_body() {
        let s = steps(
            "# comment\n\n  GET /v2/keys/a\nPUT /v2/keys/a value=1&ttl=5\n\
             PUT /v2/auth/users/x as root:pw {\"user\":\"a b\"}\nDELETE /v2/auth/enable as root:pw",
        );
        let parts: Vec<_> = s
            .iter()
            .map(|s| (s.method, s.path, s.creds, s.body))
            .collect();
        assert_eq!(
            parts,
            [
                ("GET", "/v2/keys/a", None, None),
                ("PUT", "/v2/keys/a", None, Some("value=1&ttl=5")),
                (
                    "PUT",
                    "/v2/auth/users/x",
                    Some("root:pw"),
                    Some("{\"user\":\"a b\"}")
                ),
                ("DELETE", "/v2/auth/enable", Some("root:pw"), None),
            ]
        );
    }
}
