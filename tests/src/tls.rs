//! Throw-away certificates for the TLS tests: a [`Ca`] that signs leaf certificates for
//! 127.0.0.1 into a directory, and the `deimos` flags that put a node on them ([`tls_args`],
//! [`with_mutual_tls`] for a whole cluster).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::harness::{ClusterOptions, Scheme};

/// A test CA that signs leaf certificates into a directory.
pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    pub cert_path: PathBuf,
}

/// Paths of a certificate and its key.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).expect("self-signed CA");
        let cert_path = dir.join(format!("{name}.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write CA");
        Ca {
            cert,
            key,
            cert_path,
        }
    }

    /// A certificate for 127.0.0.1 (IP SAN) usable as server and client. `expired` puts its
    /// validity entirely in the past.
    pub fn leaf(&self, dir: &Path, name: &str, expired: bool) -> Leaf {
        self.leaf_for(dir, name, &["127.0.0.1", "localhost"], expired)
    }

    /// A certificate naming exactly `names` (DNS or IP subject alternative names).
    pub fn leaf_for(&self, dir: &Path, name: &str, names: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut p = CertificateParams::new(names).expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            p.not_before = rcgen::date_time_ymd(2019, 1, 1);
            p.not_after = rcgen::date_time_ymd(2020, 1, 1);
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign leaf");
        let leaf = Leaf {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write cert");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write key");
        leaf
    }
}

/// Mutual TLS on both listeners of a node: `leaf` as its server and client certificate, and
/// certificates from `ca` required of clients and peers.
pub fn tls_args(ca: &Ca, leaf: &Leaf) -> Vec<String> {
    let (c, k, a) = (&leaf.cert, &leaf.key, &ca.cert_path);
    [
        ("--cert-file", c),
        ("--key-file", k),
        ("--ca-file", a),
        ("--peer-cert-file", c),
        ("--peer-key-file", k),
        ("--peer-ca-file", a),
    ]
    .into_iter()
    .flat_map(|(flag, file)| [flag.to_string(), file.display().to_string()])
    .collect()
}

/// `opts` for an https cluster of `n` nodes with mutual TLS on both listeners: node `i` runs on
/// a leaf certificate named `n<i+1>` (written to `dir`) from `issuer(i)`, and trusts that CA.
pub fn with_mutual_tls<'a>(
    opts: ClusterOptions,
    dir: &Path,
    n: usize,
    issuer: impl Fn(usize) -> &'a Ca,
) -> ClusterOptions {
    let node_args = (0..n)
        .map(|i| {
            let ca = issuer(i);
            let leaf = ca.leaf(dir, &format!("n{}", i + 1), false);
            (i, tls_args(ca, &leaf))
        })
        .collect();
    ClusterOptions {
        scheme: Scheme::Https,
        node_args,
        ..opts
    }
}
