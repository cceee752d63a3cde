//! Who may do what: roles ([`roles`]), the least role of each statement or plan ([`access`]), the settings each role may change ([`settings`]), stored
//! password verifiers ([`secret`]) and the audit log ([`audit`]). Knows nothing of the protocols.

pub mod access;
pub mod audit;
pub mod roles;
pub mod secret;
pub mod settings;
