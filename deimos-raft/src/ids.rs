//! One way to print member ids everywhere (logs, status, errors): 16 hex digits, as the member
//! API and etcd show them. A decimal id in one log line and a hex one in the next cannot be
//! matched by an operator reading both.

use std::fmt;

use crate::types::NodeId;

/// Displays a member id as 16 hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Id(pub NodeId);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Displays a list of member ids as `[id, id]` in hex.
pub struct Ids<'a>(pub &'a std::collections::BTreeSet<NodeId>);

impl fmt::Display for Ids<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, id) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", Id(*id))?;
        }
        f.write_str("]")
    }
}

/// An optional id (a leader that may be unknown): the id, or `none`.
pub struct MaybeId(pub Option<NodeId>);

impl fmt::Display for MaybeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => Id(id).fmt(f),
            None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_sixteen_hex_digits() {
        assert_eq!(Id(0x51b9_3d39_4db7_d158).to_string(), "51b93d394db7d158");
        assert_eq!(Id(1).to_string(), "0000000000000001");
        let set = [2, 1].into_iter().collect();
        assert_eq!(
            Ids(&set).to_string(),
            "[0000000000000001, 0000000000000002]"
        );
        assert_eq!(MaybeId(None).to_string(), "none");
    }
}
