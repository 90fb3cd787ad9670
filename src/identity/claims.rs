//! Requirements on claim values: the `[[identity.claims]]` sections.
//!
//! Every requirement must hold (AND). Each names one claim and exactly one
//! matcher. This module only looks at claims of an already verified
//! [`Identity`]; it never sees a raw token, and it does not decide what a
//! failure means for the request (policy does).
//!
//! Matching is exact and case-sensitive. Claims that are numbers or booleans
//! are compared by their JSON text, so `equals = "true"` matches
//! `"email_verified": true`.

use serde::Deserialize;
use serde_json::Value;

use super::{Identity, Problem};

/// One `[[identity.claims]]` section as written in the config file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequirement {
    /// Claim name. A name that is not a top-level claim is read as a dotted
    /// path into nested objects (`custom.team`); a top-level claim whose name
    /// itself contains dots (`https://example.com/groups`) wins over the path.
    pub claim: String,
    /// The claim is a string (or scalar) equal to this value.
    #[serde(default)]
    pub equals: Option<String>,
    /// The claim is a string (or scalar) equal to one of these values.
    #[serde(default, alias = "in")]
    pub one_of: Option<Vec<String>>,
    /// The claim is an array containing one of these values, or a string equal
    /// to one of them (IdPs send a single group as a bare string).
    #[serde(default)]
    pub contains: Option<Vec<String>>,
    /// The claim is a string ending with one of these suffixes. For e-mail
    /// domains start the suffix with `@` so `evilcorp.example` does not match
    /// `corp.example`.
    #[serde(default)]
    pub ends_with: Option<Vec<String>>,
}

const MATCHERS: &str = "equals, one_of, contains, ends_with";

impl ClaimRequirement {
    /// Checks one requirement; `key_prefix` is where it sits in the config,
    /// e.g. `identity.claims[0]`.
    pub fn validate(&self, key_prefix: &str) -> Vec<Problem> {
        let mut problems = Vec::new();
        let key = |field: &str| format!("{key_prefix}.{field}");
        if self.claim.trim().is_empty() {
            problems.push(Problem::new(
                key("claim"),
                "is empty; name the claim to check, e.g. \"email\" or \"custom.team\"",
            ));
        } else if self.claim.split('.').any(str::is_empty) {
            problems.push(Problem::new(
                key("claim"),
                format!(
                    "{:?} has an empty path segment; write nested claims as \"outer.inner\"",
                    self.claim
                ),
            ));
        }
        let set: Vec<&str> = [
            ("equals", self.equals.is_some()),
            ("one_of", self.one_of.is_some()),
            ("contains", self.contains.is_some()),
            ("ends_with", self.ends_with.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, present)| present.then_some(name))
        .collect();
        match set.len() {
            0 => problems.push(Problem::new(
                key_prefix,
                format!(
                    "claim {:?} has no matcher; set exactly one of {MATCHERS}",
                    self.claim
                ),
            )),
            1 => {}
            _ => problems.push(Problem::new(
                key_prefix,
                format!(
                    "claim {:?} sets {}; set exactly one of {MATCHERS} (add another [[identity.claims]] section to require both)",
                    self.claim,
                    set.join(" and ")
                ),
            )),
        }
        for (field, values) in [
            ("one_of", &self.one_of),
            ("contains", &self.contains),
            ("ends_with", &self.ends_with),
        ] {
            if let Some(values) = values {
                if values.is_empty() {
                    problems.push(Problem::new(
                        key(field),
                        "is an empty list, which nothing can match; list at least one value",
                    ));
                }
                if values.iter().any(String::is_empty) {
                    problems.push(Problem::new(
                        key(field),
                        "contains an empty string; remove it or give the intended value",
                    ));
                }
            }
        }
        if let Some(suffixes) = &self.ends_with {
            let is_email = self
                .claim
                .rsplit('.')
                .next()
                .is_some_and(|last| last.to_ascii_lowercase().contains("email"));
            for suffix in suffixes {
                // "corp.example" would also accept "mallory@evilcorp.example".
                if is_email && !suffix.is_empty() && !suffix.starts_with(['@', '.']) {
                    problems.push(Problem::new(
                        key("ends_with"),
                        format!(
                            "{suffix:?} would also match \"someone@evil{suffix}\"; use \"@{suffix}\" (or \".{suffix}\" to include subdomains)"
                        ),
                    ));
                }
            }
        }
        problems
    }
}

#[derive(Debug, Clone)]
enum Matcher {
    OneOf(Vec<String>),
    Contains(Vec<String>),
    EndsWith(Vec<String>),
    /// A requirement that did not pass validation: fail closed.
    Invalid,
}

#[derive(Debug, Clone)]
struct Rule {
    claim: String,
    matcher: Matcher,
}

/// Compiled claim requirements; all must hold.
#[derive(Debug, Clone, Default)]
pub struct ClaimRules {
    rules: Vec<Rule>,
}

/// Why a claim requirement failed. Names the claim, never its value (values are
/// often personal data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimFailure {
    /// The claim is absent (or the dotted path leads nowhere).
    #[error("claim {0:?} is missing")]
    Missing(String),
    /// The claim is present but its value does not satisfy the requirement.
    #[error("claim {0:?} does not satisfy its requirement")]
    Mismatch(String),
}

impl ClaimFailure {
    /// The claim that failed.
    pub fn claim(&self) -> &str {
        match self {
            ClaimFailure::Missing(c) | ClaimFailure::Mismatch(c) => c,
        }
    }

    /// Stable snake_case reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ClaimFailure::Missing(_) => "claim_missing",
            ClaimFailure::Mismatch(_) => "claim_mismatch",
        }
    }
}

impl ClaimRules {
    /// Compiles the requirements. Expects them validated; a requirement with no
    /// or several matchers never holds, so a skipped validation fails closed.
    pub fn new(reqs: &[ClaimRequirement]) -> Self {
        let rules = reqs
            .iter()
            .map(|r| {
                let matcher = match (&r.equals, &r.one_of, &r.contains, &r.ends_with) {
                    (Some(v), None, None, None) => Matcher::OneOf(vec![v.clone()]),
                    (None, Some(v), None, None) => Matcher::OneOf(v.clone()),
                    (None, None, Some(v), None) => Matcher::Contains(v.clone()),
                    (None, None, None, Some(v)) => Matcher::EndsWith(v.clone()),
                    _ => Matcher::Invalid,
                };
                Rule {
                    claim: r.claim.clone(),
                    matcher,
                }
            })
            .collect();
        ClaimRules { rules }
    }

    /// True when there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Checks every requirement in order; the first failure is returned.
    pub fn check(&self, id: &Identity) -> Result<(), ClaimFailure> {
        for rule in &self.rules {
            let Some(value) = lookup(&id.claims, &rule.claim) else {
                return Err(ClaimFailure::Missing(rule.claim.clone()));
            };
            if !rule.matcher.matches(value) {
                return Err(ClaimFailure::Mismatch(rule.claim.clone()));
            }
        }
        Ok(())
    }
}

impl Matcher {
    fn matches(&self, value: &Value) -> bool {
        match self {
            Matcher::OneOf(wanted) => scalar_text(value).is_some_and(|v| wanted.contains(&v)),
            Matcher::Contains(wanted) => match value {
                Value::Array(items) => items
                    .iter()
                    .any(|item| scalar_text(item).is_some_and(|v| wanted.contains(&v))),
                other => scalar_text(other).is_some_and(|v| wanted.contains(&v)),
            },
            Matcher::EndsWith(suffixes) => match value {
                Value::String(s) => suffixes.iter().any(|suffix| s.ends_with(suffix.as_str())),
                _ => false,
            },
            Matcher::Invalid => false,
        }
    }
}

/// A scalar claim as text; objects, arrays and null have none, so they never
/// equal a configured string.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Finds a claim by exact top-level name first, then by dotted path.
fn lookup<'a>(claims: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    let mut parts = name.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity(claims: Value) -> Identity {
        let claims = match claims {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        };
        Identity {
            subject: None,
            issuer: None,
            source: "bearer".into(),
            claims,
        }
    }

    fn req(toml_like: Value) -> ClaimRequirement {
        serde_json::from_value(toml_like).unwrap_or_default()
    }

    #[test]
    fn equals_and_one_of() {
        let id = identity(json!({"email": "a@corp.example", "email_verified": true, "level": 3}));
        let rules = ClaimRules::new(&[
            req(json!({"claim": "email_verified", "equals": "true"})),
            req(json!({"claim": "level", "in": ["2", "3"]})),
        ]);
        assert_eq!(rules.check(&id), Ok(()));
        let rules = ClaimRules::new(&[req(json!({"claim": "email", "equals": "b@corp.example"}))]);
        assert_eq!(
            rules.check(&id),
            Err(ClaimFailure::Mismatch("email".into()))
        );
    }

    #[test]
    fn contains_on_array_and_on_string() {
        let rules = ClaimRules::new(&[req(json!({"claim": "groups", "contains": ["eng", "ops"]}))]);
        assert_eq!(
            rules.check(&identity(json!({"groups": ["sales", "ops"]}))),
            Ok(())
        );
        assert_eq!(rules.check(&identity(json!({"groups": "eng"}))), Ok(()));
        let failure = rules.check(&identity(json!({"groups": ["sales"]})));
        assert_eq!(failure, Err(ClaimFailure::Mismatch("groups".into())));
        assert_eq!(failure.err().map(|f| f.reason()), Some("claim_mismatch"));
    }

    #[test]
    fn ends_with_only_on_strings() {
        let rules = ClaimRules::new(&[req(
            json!({"claim": "email", "ends_with": ["@corp.example"]}),
        )]);
        assert_eq!(
            rules.check(&identity(json!({"email": "a@corp.example"}))),
            Ok(())
        );
        assert!(rules
            .check(&identity(json!({"email": "a@evilcorp.example"})))
            .is_err());
        assert!(rules
            .check(&identity(json!({"email": ["a@corp.example"]})))
            .is_err());
    }

    #[test]
    fn nested_and_literal_dotted_claims() {
        let rules = ClaimRules::new(&[req(json!({"claim": "custom.team", "equals": "platform"}))]);
        assert_eq!(
            rules.check(&identity(json!({"custom": {"team": "platform"}}))),
            Ok(())
        );
        assert_eq!(
            rules.check(&identity(json!({"custom": {"team": "sales"}}))),
            Err(ClaimFailure::Mismatch("custom.team".into()))
        );
        let rules = ClaimRules::new(&[req(
            json!({"claim": "https://corp.example/groups", "contains": ["eng"]}),
        )]);
        assert_eq!(
            rules.check(&identity(json!({"https://corp.example/groups": ["eng"]}))),
            Ok(())
        );
    }

    #[test]
    fn missing_claim_names_the_claim() {
        let rules = ClaimRules::new(&[
            req(json!({"claim": "email", "ends_with": ["@corp.example"]})),
            req(json!({"claim": "custom.team", "equals": "platform"})),
        ]);
        let failure = rules.check(&identity(json!({"email": "a@corp.example", "custom": {}})));
        assert_eq!(failure, Err(ClaimFailure::Missing("custom.team".into())));
        let failure = failure.err();
        assert_eq!(failure.as_ref().map(|f| f.claim()), Some("custom.team"));
        assert_eq!(
            failure.map(|f| f.to_string()),
            Some("claim \"custom.team\" is missing".into())
        );
    }

    #[test]
    fn unvalidated_requirement_fails_closed() {
        let rules = ClaimRules::new(&[req(
            json!({"claim": "email", "equals": "a@corp.example", "ends_with": ["@corp.example"]}),
        )]);
        assert!(rules
            .check(&identity(json!({"email": "a@corp.example"})))
            .is_err());
    }

    #[test]
    fn validation_messages() {
        let no_matcher = req(json!({"claim": "email"}));
        assert_eq!(
            no_matcher.validate("identity.claims[0]"),
            vec![Problem::new(
                "identity.claims[0]",
                "claim \"email\" has no matcher; set exactly one of equals, one_of, contains, ends_with"
            )]
        );
        let two = req(json!({"claim": "email", "equals": "x", "contains": ["y"]}));
        assert_eq!(
            two.validate("identity.claims[1]")[0].message,
            "claim \"email\" sets equals and contains; set exactly one of equals, one_of, contains, ends_with (add another [[identity.claims]] section to require both)"
        );
        let loose = req(json!({"claim": "email", "ends_with": ["corp.example"]}));
        assert_eq!(
            loose.validate("identity.claims[2]"),
            vec![Problem::new(
                "identity.claims[2].ends_with",
                "\"corp.example\" would also match \"someone@evilcorp.example\"; use \"@corp.example\" (or \".corp.example\" to include subdomains)"
            )]
        );
        let empty = req(json!({"claim": "groups", "contains": []}));
        assert_eq!(
            empty.validate("identity.claims[3]")[0].message,
            "is an empty list, which nothing can match; list at least one value"
        );
        let bad_path = req(json!({"claim": "custom..team", "equals": "x"}));
        assert_eq!(bad_path.validate("c")[0].key, "c.claim");
        let ok = req(json!({"claim": "email", "ends_with": ["@corp.example"]}));
        assert!(ok.validate("identity.claims[0]").is_empty());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let parsed: Result<ClaimRequirement, _> =
            serde_json::from_value(json!({"claim": "email", "startswith": ["a"]}));
        assert!(parsed.is_err());
    }
}
