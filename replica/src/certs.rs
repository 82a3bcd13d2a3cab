//! Issuing a group's CA and the certificates it signs: one per member
//! (naming its member id and the addresses it is reached at, for both
//! ends of a connection) and client certificates for applications.
//!
//! The operator keeps a CA per group in a Secret and signs with it again
//! after a restart, so a CA is rebuilt from its PEM certificate and key.
//! `dledger-replica certs` and the tests use the same code to make the
//! files a replica reads.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
#[error("issuing a certificate: {0}")]
pub struct CertError(String);

impl From<rcgen::Error> for CertError {
    fn from(error: rcgen::Error) -> CertError {
        CertError(error.to_string())
    }
}

/// A certificate and its private key, PEM encoded.
#[derive(Clone, Debug)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key (PKCS#8).
    pub key_pem: String,
    /// When it stops being valid.
    pub not_after: OffsetDateTime,
}

impl Issued {
    /// Writes the certificate and key as `<dir>/<stem>.crt` and
    /// `<dir>/<stem>.key`, the key readable by its owner only; their paths.
    pub fn write(
        &self,
        dir: &std::path::Path,
        stem: &str,
    ) -> std::io::Result<(std::path::PathBuf, std::path::PathBuf)> {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::io::Write::write_all(&mut options.open(&key)?, self.key_pem.as_bytes())?;
        Ok((cert, key))
    }
}

/// What a certificate says that its holder checks before it expires: the
/// names it carries and its end of validity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateFacts {
    /// Its subject alternative names (DNS names, IP addresses as text).
    pub names: Vec<String>,
    /// When it stops being valid.
    pub not_after: OffsetDateTime,
}

/// The names and end of validity of the first certificate in `cert_pem`;
/// an error for anything that is not a readable certificate.
pub fn read_certificate(cert_pem: &str) -> Result<CertificateFacts, CertError> {
    use x509_parser::extensions::GeneralName;
    let unreadable = |what: String| CertError(format!("reading a certificate: {what}"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| unreadable(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| unreadable(e.to_string()))?;
    let mut names = Vec::new();
    if let Ok(Some(alternative)) = cert.subject_alternative_name() {
        for name in &alternative.value.general_names {
            match name {
                GeneralName::DNSName(dns) => names.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        names.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        names.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(CertificateFacts {
        names,
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// A group's certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// Clocks of machines differ: a certificate is valid from a little before
/// it is made.
const BACKDATE: Duration = Duration::hours(1);

fn ca_params(group: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("{group} dledger CA"));
    name.push(DnType::OrganizationName, "dledger");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

impl Ca {
    /// A new CA for `group`, valid for `valid_days`.
    pub fn new(group: &str, valid_days: i64) -> Result<(Ca, Issued), CertError> {
        let key = KeyPair::generate()?;
        let mut params = ca_params(group);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(valid_days);
        let cert = params.self_signed(&key)?;
        let issued = Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: params.not_after,
        };
        let ca = Ca {
            issuer: Issuer::new(params, key),
            cert_pem: issued.cert_pem.clone(),
        };
        Ok((ca, issued))
    }

    /// A CA made earlier, from its PEM certificate and key (what it signs
    /// names the certificate's subject as issuer).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        Ok(Ca {
            issuer: Issuer::from_ca_cert_pem(cert_pem, key)?,
            cert_pem: cert_pem.to_string(),
        })
    }

    /// Its certificate, PEM encoded (what members and clients trust).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A certificate for `names` (DNS names or IP addresses; the first is
    /// its common name), usable by both ends of a connection, valid for
    /// `valid_days`.
    pub fn issue(&self, names: &[String], valid_days: i64) -> Result<Issued, CertError> {
        let first = names
            .first()
            .ok_or_else(|| CertError("a certificate needs at least one name".into()))?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, first.as_str());
        params.distinguished_name = name;
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(valid_days);
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            not_after: params.not_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_read_back_gives_its_names_and_end() {
        let (ca, _) = Ca::new("orders", 30).unwrap();
        let names = vec!["orders-0".to_string(), "127.0.0.1".to_string()];
        let issued = ca.issue(&names, 7).unwrap();
        let facts = read_certificate(&issued.cert_pem).unwrap();
        assert_eq!(facts.names, names);
        // X.509 keeps whole seconds.
        assert_eq!(
            facts.not_after.unix_timestamp(),
            issued.not_after.unix_timestamp()
        );
        assert!(read_certificate("not a certificate").is_err());
        assert!(read_certificate(&issued.key_pem).is_err());
    }
}
