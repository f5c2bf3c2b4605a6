//! Request parameters: the query string merged with an `application/x-www-form-urlencoded` body
//! (the body wins, as in Go's `ParseForm`), with etcd's validation errors.

use std::collections::HashMap;

use deimos_store::keyspace::{ErrorCode, StoreError};
use percent_encoding::percent_decode;

#[derive(Debug, Default, Clone)]
pub struct Params {
    values: HashMap<String, String>,
    /// Store index for error bodies.
    index: u64,
}

/// Decode `a=1&b=%20x` strictly: invalid UTF-8 after percent-decoding is an error, not U+FFFD.
fn parse_pairs(
    raw: &[u8],
    out: &mut HashMap<String, String>,
    index: u64,
) -> Result<(), StoreError> {
    for pair in raw.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let dec = |s: &[u8]| -> Result<String, StoreError> {
            let plus: Vec<u8> = s
                .iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect();
            percent_decode(&plus)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| {
                    StoreError::new(
                        ErrorCode::InvalidForm,
                        "form field is not valid UTF-8",
                        index,
                    )
                })
        };
        let (k, v) = (dec(k)?, dec(v)?);
        // First occurrence wins within one source, as Go's `Form.Get`.
        out.entry(k).or_insert(v);
    }
    Ok(())
}

impl Params {
    pub fn parse(
        query: Option<&str>,
        body: Option<&[u8]>,
        index: u64,
    ) -> Result<Params, StoreError> {
        let mut body_vals = HashMap::new();
        if let Some(b) = body {
            parse_pairs(b, &mut body_vals, index)?;
        }
        let mut q = HashMap::new();
        if let Some(qs) = query {
            parse_pairs(qs.as_bytes(), &mut q, index)?;
        }
        for (k, v) in q {
            body_vals.entry(k).or_insert(v);
        }
        Ok(Params {
            values: body_vals,
            index,
        })
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.values.get(k).map(String::as_str)
    }

    /// etcd's cause text: the field name quoted, except for `prevExist` and `refresh`, which
    /// etcd happens to write unquoted (clients and tests match on these strings).
    fn invalid(&self, field: &str) -> StoreError {
        let cause = match field {
            "prevExist" | "refresh" => format!("invalid value for {field}"),
            _ => format!("invalid value for \"{field}\""),
        };
        StoreError::new(ErrorCode::InvalidField, cause, self.index)
    }

    /// Every field etcd 3.4 parses before it looks at the method, in its order, with its
    /// errors: a request etcd refuses is refused here with the same code and cause, whatever
    /// the method (a GET with `ttl=abc` is a 202 there too), and the first bad field wins.
    pub fn check_as_etcd(&self, is_get: bool) -> Result<(), StoreError> {
        self.index("prevIndex")?;
        self.index("waitIndex")?;
        for field in ["recursive", "sorted", "wait", "dir", "quorum", "stream"] {
            self.bool(field)?;
        }
        if self.bool("wait")? && !is_get {
            return Err(StoreError::new(
                ErrorCode::InvalidField,
                "\"wait\" can only be used with GET requests",
                self.index,
            ));
        }
        if self.get("prevValue") == Some("") {
            return Err(StoreError::new(
                ErrorCode::PrevValueRequired,
                "\"prevValue\" cannot be empty",
                self.index,
            ));
        }
        self.bool("noValueOnSuccess")?;
        let ttl = self.ttl()?;
        self.opt_bool("prevExist")?;
        if self.opt_bool("refresh")? == Some(true) {
            // The Go v2 client sends `value=` with every refresh: only a non-empty value is
            // refused, and before the TTL check.
            if self.get("value").is_some_and(|v| !v.is_empty()) {
                return Err(StoreError::new(
                    ErrorCode::RefreshValue,
                    "A value was provided on a refresh",
                    self.index,
                ));
            }
            if !matches!(ttl, Some(Some(_))) {
                return Err(StoreError::new(
                    ErrorCode::RefreshTtlRequired,
                    "No TTL value set",
                    self.index,
                ));
            }
        }
        Ok(())
    }

    /// Go's `strconv.ParseBool`, as etcd uses; absent is `false`.
    pub fn bool(&self, k: &str) -> Result<bool, StoreError> {
        match self.get(k) {
            None => Ok(false),
            Some(v) => parse_bool(v).ok_or_else(|| self.invalid(k)),
        }
    }

    pub fn opt_bool(&self, k: &str) -> Result<Option<bool>, StoreError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => parse_bool(v).map(Some).ok_or_else(|| self.invalid(k)),
        }
    }

    /// `prevIndex`, `waitIndex`: error 203 when not a number.
    pub fn index(&self, k: &str) -> Result<Option<u64>, StoreError> {
        match self.get(k) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                StoreError::new(
                    ErrorCode::IndexNaN,
                    format!("invalid value for \"{k}\""),
                    self.index,
                )
            }),
        }
    }

    /// `ttl`: absent → None; empty → Some(None) (clear the TTL); a number → Some(Some(n));
    /// anything else → error 202.
    pub fn ttl(&self) -> Result<Option<Option<u64>>, StoreError> {
        match self.get("ttl") {
            None => Ok(None),
            Some("") => Ok(Some(None)),
            Some(v) => v.parse::<u64>().map(|n| Some(Some(n))).map_err(|_| {
                StoreError::new(ErrorCode::TtlNaN, "invalid value for \"ttl\"", self.index)
            }),
        }
    }
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_wins_over_query_and_decoding_is_strict() {
        let p = Params::parse(Some("value=q&ttl=5"), Some(b"value=b+c%21"), 0).unwrap();
        assert_eq!(p.get("value"), Some("b c!"));
        assert_eq!(p.ttl().unwrap(), Some(Some(5)));
        assert!(Params::parse(None, Some(b"value=%ff%fe"), 0).is_err());
    }

    /// etcd's checks, order and cause texts (seen on etcd 3.4.23), whatever the method.
    #[test]
    fn checks_run_as_etcd_runs_them() {
        let check = |q: &str, is_get: bool| {
            Params::parse(Some(q), None, 3)
                .unwrap()
                .check_as_etcd(is_get)
                .map_err(|e| (e.code, e.cause))
        };
        let err = |code, cause: &str| Err((code, cause.to_string()));
        assert_eq!(check("value=x&ttl=5", false), Ok(()));
        // Refresh: an empty value is what the Go client sends.
        assert_eq!(check("refresh=true&value=&ttl=5", false), Ok(()));
        assert_eq!(
            check("refresh=true&value=x", false),
            err(ErrorCode::RefreshValue, "A value was provided on a refresh")
        );
        assert_eq!(
            check("refresh=true&value=&ttl=", false),
            err(ErrorCode::RefreshTtlRequired, "No TTL value set")
        );
        // The first bad field in etcd's order wins; only prevExist and refresh are unquoted.
        assert_eq!(
            check("sorted=2&waitIndex=x", true),
            err(ErrorCode::IndexNaN, "invalid value for \"waitIndex\"")
        );
        assert_eq!(
            check("ttl=abc", true),
            err(ErrorCode::TtlNaN, "invalid value for \"ttl\"")
        );
        assert_eq!(
            check("prevExist=maybe&refresh=maybe", false),
            err(ErrorCode::InvalidField, "invalid value for prevExist")
        );
        assert_eq!(
            check("noValueOnSuccess=", false),
            err(
                ErrorCode::InvalidField,
                "invalid value for \"noValueOnSuccess\""
            )
        );
        assert_eq!(
            check("wait=true", false),
            err(
                ErrorCode::InvalidField,
                "\"wait\" can only be used with GET requests"
            )
        );
        assert_eq!(check("wait=true", true), Ok(()));
        assert_eq!(
            check("prevValue=", false),
            err(
                ErrorCode::PrevValueRequired,
                "\"prevValue\" cannot be empty"
            )
        );
    }

    #[test]
    fn typed_fields_give_etcd_errors() {
        let p = Params::parse(
            Some("ttl=abc&prevIndex=x&recursive=maybe&dir=true&prevExist=false"),
            None,
            7,
        )
        .unwrap();
        assert_eq!(p.ttl().unwrap_err().code, ErrorCode::TtlNaN);
        assert_eq!(p.index("prevIndex").unwrap_err().code, ErrorCode::IndexNaN);
        assert_eq!(
            p.bool("recursive").unwrap_err().code,
            ErrorCode::InvalidField
        );
        assert!(p.bool("dir").unwrap());
        assert_eq!(p.opt_bool("prevExist").unwrap(), Some(false));
        assert_eq!(p.opt_bool("absent").unwrap(), None);
        let empty = Params::parse(Some("ttl="), None, 0).unwrap();
        assert_eq!(empty.ttl().unwrap(), Some(None));
    }
}
