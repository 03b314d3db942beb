//! What the dispatch checks before any domain sees a request: who may send it, which race
//! it reaches, and whether an expired token may still send it. Each domain module states
//! these for its own requests in one `rule` function; this file holds the shape they share
//! and the checks, so the dispatch has no per-request knowledge. Pure: no I/O.

use crate::auth::{Claims, Role};
use crate::config::Config;
use crate::device_time::DeviceTimeLimits;
use crate::error::{ErrorCode, Rejection};

/// Every role: requests about the socket itself.
pub(super) const ANYONE: &[Role] = &Role::ALL;
/// Organisers only.
pub(super) const ADMIN: &[Role] = &[Role::Admin];
/// No role: the answer for a request a domain does not know, so a request routed to the
/// wrong domain is refused rather than let through.
pub(super) const NOBODY: &[Role] = &[];

/// Who may send one request and what it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule<'a> {
    /// The roles that may send it; any other gets `forbidden`.
    pub roles: &'static [Role],
    /// What it reaches, for race-scoped tokens.
    pub scope: Scope<'a>,
    /// Whether it is served past the token's expiry (only a refresh is: it is how a
    /// socket gets out of that state).
    pub after_expiry: bool,
}

impl<'a> Rule<'a> {
    /// `roles` may send it; it reaches `scope`; not after the token's expiry.
    pub const fn new(roles: &'static [Role], scope: Scope<'a>) -> Rule<'a> {
        Rule {
            roles,
            scope,
            after_expiry: false,
        }
    }

    /// The same rule, also served after the token's expiry.
    pub const fn after_expiry(mut self) -> Rule<'a> {
        self.after_expiry = true;
        self
    }

    /// Whether `role` may send the request at all.
    pub fn permits(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// A race-scoped token reaches only its race: a request naming another race, or one
    /// that is not about one race, is forbidden. Unscoped tokens reach everything.
    pub fn check_scope(&self, claims: &Claims) -> Result<(), Rejection> {
        let Some(scope) = &claims.race else {
            return Ok(());
        };
        match self.scope {
            Scope::Any => Ok(()),
            Scope::Race(id) if id == scope => Ok(()),
            Scope::Race(_) | Scope::Global => Err(Rejection::new(
                ErrorCode::Forbidden,
                format!("this token is limited to race {scope}"),
            )),
        }
    }
}

/// What a request reaches, as far as a race-scoped token is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Harmless to a scoped token: about the socket itself, filtered to the token's race
    /// (lists), or sent to the token's own race (a racer's fixes).
    Any,
    /// Not about one race (create, backup, mail, patrol): a scoped token may not send it.
    Global,
    /// About this race.
    Race(&'a str),
}

/// The configured bounds on client-supplied times (a fix's `at_ms`, a mail's
/// `sent_at_ms`), shared by the domains that take such times.
pub(super) fn device_time_limits(config: &Config) -> DeviceTimeLimits {
    config.tracking.device_time
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_tokens_reach_their_race_and_what_is_harmless_only() {
        let scoped = crate::auth::claims_for(Role::Admin, "ops", Some("r1"), 0, 60);
        let unscoped = crate::auth::claims_for(Role::Admin, "ops", None, 0, 60);
        let rule = |scope| Rule::new(ADMIN, scope);
        assert!(rule(Scope::Race("r1")).check_scope(&scoped).is_ok());
        assert!(rule(Scope::Any).check_scope(&scoped).is_ok());
        let refused = rule(Scope::Race("r2")).check_scope(&scoped).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
        assert_eq!(refused.message, "this token is limited to race r1");
        assert!(rule(Scope::Global).check_scope(&scoped).is_err());
        for scope in [Scope::Any, Scope::Global, Scope::Race("r2")] {
            assert!(rule(scope).check_scope(&unscoped).is_ok());
        }
    }

    #[test]
    fn nobody_is_permitted_what_no_domain_claims() {
        let rule = Rule::new(NOBODY, Scope::Global);
        assert!(Role::ALL.iter().all(|&role| !rule.permits(role)));
        assert!(!rule.after_expiry);
        assert!(Rule::new(ANYONE, Scope::Any).after_expiry().after_expiry);
    }
}
