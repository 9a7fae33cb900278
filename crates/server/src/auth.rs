//! Who a client is: JWT verification (HS256 with a shared secret, RS256 or ES256 with a
//! public key), the claims Herald reads, anonymous access, and a cache of verified
//! tokens.
//!
//! Claims: `sub` (the user id, required), `rooms` (patterns of rooms the user may
//! subscribe to), `publish` (patterns of rooms the user may publish to), `tier`
//! (`critical`, `standard` or `degraded`). Patterns are globs: `*` matches any run of
//! characters, `?` one character.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::AuthConfig;

/// Longest a verified token is cached, whatever its expiry.
const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);
/// How long a token without `exp` (allowed by `auth.require_exp = false`) is cached.
const NO_EXP_CACHE_TTL: Duration = Duration::from_secs(600);

/// The connection tier a token asks for (the operations features act on it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Kept longest under pressure.
    Critical,
    /// The default.
    #[default]
    Standard,
    /// Evicted first when the server is full.
    Degraded,
}

impl Tier {
    /// The tier named `s`.
    pub fn parse(s: &str) -> Option<Tier> {
        match s {
            "critical" => Some(Tier::Critical),
            "standard" => Some(Tier::Standard),
            "degraded" => Some(Tier::Degraded),
            _ => None,
        }
    }

    /// Every tier, in the order of [`Tier::index`].
    pub const ALL: [Tier; 3] = [Tier::Critical, Tier::Standard, Tier::Degraded];

    /// Position in [`Tier::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The tier's name, as in the claim.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Critical => "critical",
            Tier::Standard => "standard",
            Tier::Degraded => "degraded",
        }
    }
}

/// Room patterns (globs), kept as characters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Patterns(Box<[Box<[char]>]>);

impl Patterns {
    /// Patterns from their text.
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Patterns {
        Patterns(
            patterns
                .iter()
                .map(|p| p.as_ref().chars().collect())
                .collect(),
        )
    }

    /// Whether any pattern matches `room`.
    pub fn matches(&self, room: &str) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let text: Vec<char> = room.chars().collect();
        self.0.iter().any(|p| glob(p, &text))
    }

    /// Whether a pattern that itself starts with `prefix` matches `room`: rooms under a
    /// reserved prefix (`user:`) are reached only through patterns that name the
    /// prefix, never through a bare `*`.
    pub fn matches_under(&self, prefix: &str, room: &str) -> bool {
        let text: Vec<char> = room.chars().collect();
        let prefix: Vec<char> = prefix.chars().collect();
        self.0
            .iter()
            .any(|p| p.starts_with(&prefix) && glob(p, &text))
    }

    /// Whether there are no patterns (nothing matches).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Glob match: `*` is any run of characters (also none), `?` one character, anything
/// else itself. Linear backtracking on the last star: O(pattern × text) at worst, and
/// both are bounded (room names by `limits.max_room_name_chars`).
fn glob<T: PartialEq + Copy + From<u8>>(pattern: &[T], text: &[T]) -> bool {
    let star = T::from(b'*');
    let any = T::from(b'?');
    let (mut p, mut t) = (0, 0);
    let mut last_star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(&c) if c == star => {
                last_star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == any || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match last_star {
                // Let the last star take one more character and try again from there.
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    last_star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == star)
}

/// A client's verified identity; shared by every socket that presented the same token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user id (`sub`); `None` for an anonymous client.
    pub user: Option<Arc<str>>,
    /// Rooms the client may subscribe to.
    pub rooms: Patterns,
    /// Rooms the client may publish to.
    pub publish: Patterns,
    /// The connection tier.
    pub tier: Tier,
    /// Expiry of the token (seconds since the epoch), if it has one.
    pub expires: Option<u64>,
    /// The token's other claims, for services that read their own.
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Identity {
    /// An identity with no rights (what a socket without one is treated as).
    pub fn nobody() -> Identity {
        Identity {
            user: None,
            rooms: Patterns::default(),
            publish: Patterns::default(),
            tier: Tier::Standard,
            expires: None,
            claims: serde_json::Map::new(),
        }
    }

    /// The claim `name` of the token, other than those read into the fields above
    /// (`sub`, `rooms`, `publish`, `tier`, `exp`).
    pub fn claim(&self, name: &str) -> Option<&serde_json::Value> {
        self.claims.get(name)
    }

    /// Whether the token has expired (allowing `leeway_s` of clock skew): its rights end
    /// then, also for a socket still connected.
    pub fn expired(&self, leeway_s: u64) -> bool {
        self.expires
            .is_some_and(|exp| exp + leeway_s < jsonwebtoken::get_current_timestamp())
    }
}

/// Why a client was refused. The code goes to the client in the `CONNECT_ERROR` data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the CONNECT auth payload, and anonymous clients are not allowed.
    #[error("a token is required: connect with auth {{ token }}")]
    Missing,
    /// The token is not a JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not verify with the configured key.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` has not come yet.
    #[error("token not valid yet")]
    NotYetValid,
    /// `aud` does not name this server.
    #[error("wrong token audience")]
    WrongAudience,
    /// `iss` is not the configured issuer.
    #[error("wrong token issuer")]
    WrongIssuer,
    /// The token's algorithm has no configured key.
    #[error("token algorithm not accepted: {0}")]
    WrongAlgorithm(String),
    /// A claim is missing or has the wrong shape.
    #[error("invalid token claims: {0}")]
    InvalidClaims(String),
}

impl AuthError {
    /// The machine-readable code sent to the client and counted in metrics.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "token_missing",
            AuthError::Malformed(_) => "token_malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "token_expired",
            AuthError::NotYetValid => "token_not_yet_valid",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAlgorithm(_) => "wrong_algorithm",
            AuthError::InvalidClaims(_) => "invalid_claims",
        }
    }

    /// Every code, for metrics.
    pub const CODES: [&'static str; 9] = [
        "token_missing",
        "token_malformed",
        "bad_signature",
        "token_expired",
        "token_not_yet_valid",
        "wrong_audience",
        "wrong_issuer",
        "wrong_algorithm",
        "invalid_claims",
    ];
}

/// The kind of public key in a PEM file, checked at configuration time.
///
/// # Errors
///
/// A message saying what the file is not.
pub fn key_family(pem: &[u8]) -> Result<AlgorithmFamily, String> {
    if DecodingKey::from_rsa_pem(pem).is_ok() {
        Ok(AlgorithmFamily::Rsa)
    } else if DecodingKey::from_ec_pem(pem).is_ok() {
        Ok(AlgorithmFamily::Ec)
    } else {
        Err("not an RSA or EC public key in PEM form".to_owned())
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    tier: Option<String>,
    exp: Option<u64>,
    /// Every other claim, for the services that read their own (`docs`, say).
    #[serde(flatten)]
    other: serde_json::Map<String, serde_json::Value>,
}

type Cache = moka::sync::Cache<Arc<str>, Arc<Identity>>;

/// Checks tokens and hands out identities.
pub struct Verifier {
    hmac: Option<(DecodingKey, Validation)>,
    public: Option<(DecodingKey, Validation)>,
    /// `Some` when clients without a token are let in.
    anonymous: Option<Arc<Identity>>,
    cache: Option<Cache>,
    leeway_s: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("hmac", &self.hmac.is_some())
            .field("public", &self.public.is_some())
            .field("anonymous", &self.anonymous.is_some())
            .finish_non_exhaustive()
    }
}

struct UntilExpiry;

impl moka::Expiry<Arc<str>, Arc<Identity>> for UntilExpiry {
    // moka's trait names std's Instant; the value is not used here.
    #[allow(clippy::disallowed_types)]
    fn expire_after_create(
        &self,
        _token: &Arc<str>,
        identity: &Arc<Identity>,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(match identity.expires {
            Some(exp) => {
                Duration::from_secs(exp.saturating_sub(jsonwebtoken::get_current_timestamp()))
                    .min(MAX_CACHE_TTL)
            }
            None => NO_EXP_CACHE_TTL,
        })
    }
}

impl Verifier {
    /// A verifier for `config` (validated: keys parse).
    ///
    /// # Errors
    ///
    /// A public key that does not parse.
    pub fn new(config: &AuthConfig) -> Result<Verifier, String> {
        let validation = |family: AlgorithmFamily| {
            let mut v = Validation::new_for_family(family);
            v.leeway = config.leeway_s;
            v.validate_nbf = true;
            if !config.require_exp {
                v.required_spec_claims.clear();
            }
            // A configured issuer or audience must be present, not only right when
            // present: a token minted for another service may simply lack the claim.
            if let Some(iss) = &config.issuer {
                v.set_issuer(&[iss]);
                v.required_spec_claims.insert("iss".to_owned());
            }
            if let Some(aud) = &config.audience {
                v.set_audience(&[aud]);
                v.required_spec_claims.insert("aud".to_owned());
            }
            v
        };
        let hmac = match &config.hmac_secret {
            Some(secret) => Some((
                DecodingKey::from_secret(secret).map_err(|e| e.to_string())?,
                validation(AlgorithmFamily::Hmac),
            )),
            None => None,
        };
        let public = match &config.public_key {
            Some((_, pem)) => {
                let family = key_family(pem)?;
                let key = match family {
                    AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
                    _ => DecodingKey::from_ec_pem(pem),
                }
                .map_err(|e| e.to_string())?;
                let mut v = validation(family);
                if family == AlgorithmFamily::Ec {
                    // EdDSA is not an EC algorithm for our keys.
                    v.algorithms = vec![Algorithm::ES256, Algorithm::ES384];
                }
                Some((key, v))
            }
            None => None,
        };
        let anonymous = (!config.enabled() || config.allow_anonymous).then(|| {
            Arc::new(Identity {
                user: None,
                rooms: Patterns::new(&config.anonymous_rooms),
                publish: Patterns::new(&config.anonymous_publish),
                tier: config.anonymous_tier,
                expires: None,
                claims: serde_json::Map::new(),
            })
        });
        let cache = (config.enabled() && config.cache_size > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(config.cache_size)
                .expire_after(UntilExpiry)
                .build()
        });
        Ok(Verifier {
            hmac,
            public,
            anonymous,
            cache,
            leeway_s: config.leeway_s,
        })
    }

    /// Clock skew allowed on expiry, in seconds.
    pub fn leeway_s(&self) -> u64 {
        self.leeway_s
    }

    /// Whether tokens are verified at all (otherwise every client is anonymous).
    pub fn enabled(&self) -> bool {
        self.hmac.is_some() || self.public.is_some()
    }

    /// The identity of a client that presented `token` (or none).
    ///
    /// # Errors
    ///
    /// [`AuthError`] saying why the client is refused.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Arc<Identity>, AuthError> {
        let token = match token {
            Some(t) if !t.is_empty() => t,
            _ => return self.anonymous.clone().ok_or(AuthError::Missing),
        };
        if !self.enabled() {
            // No key to check it with: the token means nothing here.
            return self.anonymous.clone().ok_or(AuthError::Missing);
        }
        if let Some(cache) = &self.cache {
            if let Some(identity) = cache.get(token) {
                return Ok(identity);
            }
        }
        let identity = Arc::new(self.verify(token)?);
        if let Some(cache) = &self.cache {
            cache.insert(Arc::from(token), identity.clone());
        }
        Ok(identity)
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Malformed(e.to_string()))?;
        let (key, validation) = [&self.hmac, &self.public]
            .into_iter()
            .flatten()
            .find(|(_, v)| v.algorithms.contains(&header.alg))
            .ok_or_else(|| AuthError::WrongAlgorithm(format!("{:?}", header.alg)))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| {
            match e.into_kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAlgorithm => {
                    AuthError::WrongAlgorithm(format!("{:?}", header.alg))
                }
                ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
                ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthError::WrongIssuer,
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::InvalidClaims(format!("`{c}` is required"))
                }
                ErrorKind::InvalidClaimFormat(c) => {
                    AuthError::InvalidClaims(format!("`{c}` has the wrong type"))
                }
                // The header parsed above: a JSON error is in the claims.
                ErrorKind::Json(e) => AuthError::InvalidClaims(e.to_string()),
                other => AuthError::Malformed(format!("{other:?}")),
            }
        })?;
        let claims = data.claims;
        let user = match claims.sub {
            Some(sub) if !sub.is_empty() => Arc::<str>::from(sub),
            _ => return Err(AuthError::InvalidClaims("`sub` is required".to_owned())),
        };
        let tier = match claims.tier.as_deref() {
            None => Tier::Standard,
            Some(t) => Tier::parse(t).ok_or_else(|| {
                AuthError::InvalidClaims(format!(
                    "`tier` is {t:?}; expected critical, standard or degraded"
                ))
            })?,
        };
        Ok(Identity {
            user: Some(user),
            rooms: Patterns::new(&claims.rooms),
            publish: Patterns::new(&claims.publish),
            tier,
            expires: claims.exp,
            claims: claims.other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Globs: stars take any run, question marks one byte, everything else itself.
    #[test]
    fn globs() {
        for (p, t, ok) in [
            ("*", "", true),
            ("*", "anything:at:all", true),
            ("chat:*", "chat:general", true),
            ("chat:*", "chat:", true),
            ("chat:*", "chats:x", false),
            ("chat:*", "chat", false),
            ("doc:?", "doc:1", true),
            ("doc:?", "doc:12", false),
            ("*:lobby", "team:a:lobby", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
            ("exact", "exact", true),
            ("exact", "exactly", false),
            ("", "", true),
            ("", "x", false),
            ("**", "x", true),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), ok, "{p:?} on {t:?}");
        }
        assert!(Patterns::new(&["doc:?"]).matches("doc:é"));
        assert!(!Patterns::new(&["doc:??"]).matches("doc:é"));
        let user = Patterns::new(&["*", "user:bob"]);
        assert!(!user.matches_under("user:", "user:alice"));
        assert!(user.matches_under("user:", "user:bob"));
        let many = Patterns::new(&["a:*", "b:?"]);
        assert!(many.matches("b:1") && many.matches("a:") && !many.matches("c:1"));
        assert!(!Patterns::default().matches("x"));
    }

    /// A pathological pattern stays fast: backtracking restarts at the last star only.
    #[test]
    fn glob_backtracking_is_bounded() {
        let pattern = "*a".repeat(50) + "b";
        let text = "a".repeat(200);
        assert!(!glob(pattern.as_bytes(), text.as_bytes()));
    }

    fn config(secret: &str) -> AuthConfig {
        AuthConfig {
            hmac_secret: Some(secret.as_bytes().to_vec()),
            leeway_s: 0,
            require_exp: true,
            cache_size: 10,
            ..AuthConfig::default()
        }
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
        )
        .unwrap()
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    /// A good token gives its claims; bad ones give their reason.
    #[test]
    fn verification() {
        let v = Verifier::new(&config(SECRET)).unwrap();
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let good = token(
            SECRET,
            serde_json::json!({"sub": "alice", "rooms": ["chat:*"], "tier": "critical", "exp": exp}),
        );
        let id = v.authenticate(Some(&good)).unwrap();
        assert_eq!(id.user.as_deref(), Some("alice"));
        assert!(id.rooms.matches("chat:x") && id.publish.is_empty());
        assert_eq!(id.tier, Tier::Critical);
        // Cached: the same Arc comes back.
        assert!(Arc::ptr_eq(&id, &v.authenticate(Some(&good)).unwrap()));

        let past = jsonwebtoken::get_current_timestamp() - 600;
        let cases = [
            (None, "token_missing"),
            (Some("not a jwt".to_owned()), "token_malformed"),
            (
                Some(token(
                    "another secret, another secret!!",
                    serde_json::json!({"sub": "a", "exp": exp}),
                )),
                "bad_signature",
            ),
            (
                Some(token(SECRET, serde_json::json!({"sub": "a", "exp": past}))),
                "token_expired",
            ),
            (
                Some(token(SECRET, serde_json::json!({"sub": "a"}))),
                "invalid_claims",
            ),
            (
                Some(token(SECRET, serde_json::json!({"exp": exp}))),
                "invalid_claims",
            ),
            (
                Some(token(
                    SECRET,
                    serde_json::json!({"sub": "a", "exp": exp, "rooms": "x"}),
                )),
                "invalid_claims",
            ),
            (
                Some(token(
                    SECRET,
                    serde_json::json!({"sub": "a", "exp": exp, "tier": "gold"}),
                )),
                "invalid_claims",
            ),
            (
                Some(token(
                    SECRET,
                    serde_json::json!({"sub": "a", "exp": exp, "aud": "other"}),
                )),
                "wrong_audience",
            ),
            (
                Some(token(
                    SECRET,
                    serde_json::json!({"sub": "a", "exp": exp, "nbf": exp}),
                )),
                "token_not_yet_valid",
            ),
        ];
        for (t, code) in cases {
            assert_eq!(
                v.authenticate(t.as_deref()).unwrap_err().code(),
                code,
                "{t:?}"
            );
        }
    }

    /// Audience and issuer, when configured, must match.
    #[test]
    fn audience_and_issuer() {
        let mut c = config(SECRET);
        c.audience = Some("herald".into());
        c.issuer = Some("https://issuer.test".into());
        let v = Verifier::new(&c).unwrap();
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let ok = token(
            SECRET,
            serde_json::json!({"sub": "a", "exp": exp, "aud": "herald", "iss": "https://issuer.test"}),
        );
        assert!(v.authenticate(Some(&ok)).is_ok());
        let wrong_aud = token(
            SECRET,
            serde_json::json!({"sub": "a", "exp": exp, "aud": "x", "iss": "https://issuer.test"}),
        );
        assert_eq!(
            v.authenticate(Some(&wrong_aud)).unwrap_err(),
            AuthError::WrongAudience
        );
        let wrong_iss = token(
            SECRET,
            serde_json::json!({"sub": "a", "exp": exp, "aud": "herald", "iss": "x"}),
        );
        assert_eq!(
            v.authenticate(Some(&wrong_iss)).unwrap_err(),
            AuthError::WrongIssuer
        );
    }

    /// Anonymous clients: everyone without auth configured; with auth, only when allowed.
    #[test]
    fn anonymous() {
        let open = Verifier::new(&AuthConfig {
            anonymous_rooms: vec!["*".into()],
            ..AuthConfig::default()
        })
        .unwrap();
        let id = open.authenticate(None).unwrap();
        assert!(id.user.is_none() && id.rooms.matches("x"));
        let mut c = config(SECRET);
        assert_eq!(
            Verifier::new(&c).unwrap().authenticate(None).unwrap_err(),
            AuthError::Missing
        );
        c.allow_anonymous = true;
        let v = Verifier::new(&c).unwrap();
        assert!(v.authenticate(Some("")).unwrap().user.is_none());
        // A bad token is refused even where anonymous clients are allowed.
        assert!(v.authenticate(Some("x.y.z")).is_err());
    }
}
