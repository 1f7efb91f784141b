//! Authentication: who is making a request.
//!
//! Two ways in, as in Kubernetes: a client certificate signed by the cluster CA (CN = user,
//! each O = a group; the TLS layer has already verified the chain, see [`crate::pki`]) or a
//! bearer token from a static token file (`--token-auth-file` format) or added in code.
//! Every authenticated user is in the group [`AUTHENTICATED_GROUP`].

use std::path::{Path, PathBuf};

/// Group every authenticated user belongs to.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// An authenticated user, as RBAC sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct UserInfo {
    /// User name (certificate CN, or the token file's user column).
    pub name: String,
    /// Unique id (empty for certificates).
    pub uid: String,
    /// Groups, always ending with [`AUTHENTICATED_GROUP`].
    pub groups: Vec<String>,
}

impl UserInfo {
    /// Appends [`AUTHENTICATED_GROUP`] unless it is already there.
    fn authenticated(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            self.groups.push(AUTHENTICATED_GROUP.to_owned());
        }
        self
    }
}

/// Errors loading a token file.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read.
    #[error("cannot read token file {}", path.display())]
    Io {
        /// The token file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `token,user,uid[,"group1,group2"]`.
    #[error("token file {}, line {line}: {reason}", path.display())]
    Malformed {
        /// The token file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
    },
}

/// The user a verified client certificate (DER) identifies: CN is the name, every O a group.
/// Returns `None` if the certificate does not parse or has no (UTF-8) common name.
/// Only call this on certificates whose chain the TLS layer has verified.
pub fn user_from_client_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?;
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    let user = UserInfo { name: name.to_owned(), uid: String::new(), groups };
    Some(user.authenticated())
}

/// The token in an `Authorization` header value `Bearer <token>` (scheme case-insensitive).
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(|c: char| c.is_ascii_whitespace())?;
    let token = token.trim();
    let valid = scheme.eq_ignore_ascii_case("bearer")
        && !token.is_empty()
        && !token.contains(|c: char| c.is_ascii_whitespace());
    valid.then_some(token)
}

/// Bearer tokens mapped to users: a Kubernetes static token file plus tokens added in code.
/// Lookups compare tokens in constant time; `Debug` never shows them.
#[derive(Clone, Default)]
pub struct TokenAuthenticator {
    tokens: Vec<(String, UserInfo)>,
}

impl std::fmt::Debug for TokenAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuthenticator").field("tokens", &self.tokens.len()).finish()
    }
}

impl TokenAuthenticator {
    /// An authenticator that knows no tokens.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads a static token file: one `token,user,uid[,"group1,group2"]` per line (CSV;
    /// further columns are ignored). Blank lines and lines starting with `#` are skipped.
    /// A token listed twice maps to its last line, as in Kubernetes.
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io { path: path.to_owned(), source })?;
        let mut auth = Self::empty();
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        for (index, line) in text.lines().enumerate() {
            let malformed = |reason: String| AuthError::Malformed { path: path.to_owned(), line: index + 1, reason };
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let fields = parse_csv_line(line).map_err(|reason| malformed(reason.to_owned()))?;
            let [token, name, uid, rest @ ..] = fields.as_slice() else {
                return Err(malformed(format!(
                    "expected at least 3 columns (token, user name, user uid), found {}",
                    fields.len()
                )));
            };
            if token.is_empty() {
                return Err(malformed("empty token".into()));
            }
            if name.is_empty() {
                return Err(malformed("empty user name".into()));
            }
            let groups = rest.first().map_or_else(Vec::new, |groups| {
                groups.split(',').map(str::trim).filter(|g| !g.is_empty()).map(str::to_owned).collect()
            });
            if auth.tokens.iter().any(|(t, _)| t == token) {
                tracing::warn!(path = %path.display(), line = index + 1, "duplicate token in token file");
            }
            let user = UserInfo { name: name.clone(), uid: uid.clone(), groups };
            auth.insert(token.clone(), user);
        }
        Ok(auth)
    }

    /// Adds `token` for `user`, replacing any user the token had.
    pub fn insert(&mut self, token: impl Into<String>, user: UserInfo) {
        let token = token.into();
        match self.tokens.iter_mut().find(|(t, _)| *t == token) {
            Some(entry) => entry.1 = user,
            None => self.tokens.push((token, user)),
        }
    }

    /// The user `bearer` belongs to, if any. Every known token is compared in constant time.
    pub fn authenticate(&self, bearer: &str) -> Option<UserInfo> {
        if bearer.is_empty() {
            return None;
        }
        let mut found = None;
        for (token, user) in &self.tokens {
            if constant_time_eq(token.as_bytes(), bearer.as_bytes()) {
                found = Some(user);
            }
        }
        found.cloned().map(UserInfo::authenticated)
    }
}

/// Compares without an early exit, so timing reveals at most the length of `a` or `b`.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        diff |= a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0);
    }
    std::hint::black_box(diff) == 0
}

/// Splits one CSV record (RFC 4180 quoting, leading spaces of a field trimmed, no multi-line
/// fields).
fn parse_csv_line(line: &str) -> Result<Vec<String>, &'static str> {
    let mut fields = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
        let mut field = String::new();
        let quoted = chars.next_if_eq(&'"').is_some();
        loop {
            match (chars.next(), quoted) {
                (None, true) => return Err("unterminated quoted field"),
                (None, false) => {
                    fields.push(field);
                    return Ok(fields);
                }
                (Some('"'), true) if chars.next_if_eq(&'"').is_some() => field.push('"'),
                (Some('"'), true) => match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(_) => return Err("unexpected character after a closing quote"),
                },
                (Some('"'), false) => return Err("quote in an unquoted field"),
                (Some(','), false) => break,
                (Some(c), _) => field.push(c),
            }
        }
        fields.push(field);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, uid: &str, groups: &[&str]) -> UserInfo {
        UserInfo { name: name.into(), uid: uid.into(), groups: groups.iter().map(|g| g.to_string()).collect() }
    }

    fn token_file(contents: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.csv");
        std::fs::write(&path, contents).unwrap();
        (dir, path)
    }

    #[test]
    fn parses_token_file() {
        let (_dir, path) = token_file(
            "\u{feff}# comment\n\
             \n\
             t1,alice,u1,\"dev, ops\"\r\n\
             t2,bob,u2\n  \
             t3, carol ,u3,single,ignored\n\
             \"t,4\",dave,u4,\"\"\n",
        );
        let auth = TokenAuthenticator::from_file(&path).unwrap();
        let authed = "system:authenticated";
        assert_eq!(auth.authenticate("t1"), Some(user("alice", "u1", &["dev", "ops", authed])));
        assert_eq!(auth.authenticate("t2"), Some(user("bob", "u2", &[authed])));
        assert_eq!(auth.authenticate("t3"), Some(user("carol ", "u3", &["single", authed])));
        assert_eq!(auth.authenticate("t,4"), Some(user("dave", "u4", &[authed])));
        for wrong in ["", "t", "t11", "T1", "# comment"] {
            assert_eq!(auth.authenticate(wrong), None, "{wrong:?}");
        }
        assert!(!format!("{auth:?}").contains("t1"));
    }

    #[test]
    fn token_file_errors_name_the_line() {
        let cases = [
            ("ok,a,1\nonly,two\n", 2, "at least 3 columns"),
            ("# c\n\nt,a,1,\"g1,g2\n", 3, "unterminated"),
            ("t,a\"b,1\n", 1, "quote"),
            ("\"t\"x,a,1\n", 1, "closing quote"),
            (",a,1\n", 1, "empty token"),
            ("t,,1\n", 1, "empty user"),
        ];
        for (contents, line, reason) in cases {
            let (_dir, path) = token_file(contents);
            let err = TokenAuthenticator::from_file(&path).unwrap_err();
            match &err {
                AuthError::Malformed { line: l, reason: r, .. } => {
                    assert_eq!(*l, line, "{contents:?}");
                    assert!(r.contains(reason), "{r}");
                }
                other => panic!("unexpected {other}"),
            }
            assert!(err.to_string().contains(&format!("line {line}")));
        }
        let missing = TokenAuthenticator::from_file(Path::new("/nonexistent/tokens.csv"));
        assert!(matches!(missing, Err(AuthError::Io { .. })));
    }

    #[test]
    fn duplicate_and_inserted_tokens() {
        let (_dir, path) = token_file("t,first,1\nt,second,2\n");
        let mut auth = TokenAuthenticator::from_file(&path).unwrap();
        assert_eq!(auth.authenticate("t").map(|u| u.name), Some("second".into()));
        auth.insert("t", user("third", "3", &[]));
        auth.insert("n", user("node", "4", &["system:nodes", "system:authenticated"]));
        assert_eq!(auth.authenticate("t").map(|u| u.name), Some("third".into()));
        assert_eq!(
            auth.authenticate("n").map(|u| u.groups),
            Some(vec!["system:nodes".into(), "system:authenticated".into()])
        );
        assert_eq!(TokenAuthenticator::empty().authenticate("t"), None);
    }

    #[test]
    fn parses_bearer_header() {
        assert_eq!(bearer_token("Bearer abc.def"), Some("abc.def"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("BEARER\tabc"), Some("abc"));
        for bad in ["Bearer", "Bearer ", "Basic abc", "Bearerabc", "Bearer a b", ""] {
            assert_eq!(bearer_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn constant_time_eq_matches_eq() {
        for (a, b) in [("", ""), ("a", ""), ("ab", "ab"), ("ab", "ac"), ("abc", "ab")] {
            assert_eq!(constant_time_eq(a.as_bytes(), b.as_bytes()), a == b);
        }
    }

    #[test]
    fn garbage_certificate_is_no_user() {
        assert_eq!(user_from_client_cert(b"not a certificate"), None);
    }
}
