//! Whether discovered names can reach this node: the BEAM matches a
//! connection by the exact name dialled, so a node named `app@10.0.0.5`
//! is never `app@10-0-0-5.app-headless…` and a long name never talks to a
//! short one. Formation warns (`erlkube agent --check`, `erlkube formation
//! --check`, and at run time) when the forms disagree.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use crate::NodeName;

/// How a node name's host part is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostForm {
    /// An IPv4 address (`app@10.0.0.5`, a long name).
    Ipv4,
    /// An IPv6 address (`app@fd00::5`, a long name).
    Ipv6,
    /// A DNS name with dots (`app@app-0.app-headless.ns.svc.cluster.local`,
    /// a long name).
    DnsName,
    /// A host without dots (`app@app-0`, a short name, `-sname`).
    Short,
}

impl HostForm {
    /// The form of `host`.
    pub fn of(host: &str) -> HostForm {
        match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(_)) => HostForm::Ipv4,
            Ok(IpAddr::V6(_)) => HostForm::Ipv6,
            Err(_) if host.contains('.') => HostForm::DnsName,
            Err(_) => HostForm::Short,
        }
    }
}

impl fmt::Display for HostForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HostForm::Ipv4 => "an IPv4 address (long name)",
            HostForm::Ipv6 => "an IPv6 address (long name)",
            HostForm::DnsName => "a DNS name (long name)",
            HostForm::Short => "a host without dots (short name)",
        })
    }
}

impl NodeName {
    /// The form of this name's host part.
    pub fn host_form(&self) -> HostForm {
        HostForm::of(self.host())
    }
}

/// Checks a node's name against the forms its discovery produces: `Some`
/// with a warning naming both when `own`'s form is not among `discovered`.
pub fn check_forms(own: &NodeName, discovered: &[HostForm], strategy: &str) -> Option<String> {
    let form = own.host_form();
    if discovered.is_empty() || discovered.contains(&form) {
        return None;
    }
    let names: Vec<String> = discovered.iter().map(|f| f.to_string()).collect();
    Some(format!(
        "node name {own} has {form} as host, but the {strategy} strategy discovers names \
         with {} as host: the BEAM matches nodes by the exact name, so these nodes can never \
         connect; name the node the way discovery names it (e.g. nodename mode ip with \
         dns_a or kubernetes mode ip, pod_dns with kubernetes mode dns, statefulset with \
         dns_srv or kubernetes mode hostname)",
        names.join(" or ")
    ))
}

/// Checks an answer: `Some` with a warning when it names other nodes and
/// none of them has `own`'s host form (so none can be reached by it).
pub fn check_answer(own: &NodeName, found: &BTreeSet<NodeName>) -> Option<String> {
    let form = own.host_form();
    let others: Vec<&NodeName> = found.iter().filter(|n| *n != own).collect();
    if others.is_empty() || others.iter().any(|n| n.host_form() == form) {
        return None;
    }
    let example = others[0];
    Some(format!(
        "discovery found only names this node cannot reach: {} node(s) such as {example} \
         have {} as host, this node {own} has {form}; name the node the way discovery \
         names it",
        others.len(),
        example.host_form()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> NodeName {
        NodeName::parse(s).unwrap()
    }

    #[test]
    fn forms() {
        assert_eq!(HostForm::of("10.0.0.5"), HostForm::Ipv4);
        assert_eq!(HostForm::of("fd00::5"), HostForm::Ipv6);
        assert_eq!(
            HostForm::of("a-0.svc.ns.svc.cluster.local"),
            HostForm::DnsName
        );
        assert_eq!(HostForm::of("vm"), HostForm::Short);
    }

    #[test]
    fn an_answer_of_other_forms_only_is_reported() {
        // The case: e1@127.0.0.1 found e1@vm and e2@vm.
        let own = n("e1@127.0.0.1");
        let found: BTreeSet<_> = [n("e1@vm"), n("e2@vm")].into();
        assert!(check_answer(&own, &found).unwrap().contains("e1@vm"));
        let found: BTreeSet<_> = [n("e1@127.0.0.1"), n("e2@127.0.0.1")].into();
        assert_eq!(check_answer(&own, &found), None);
        // Only itself: nothing to reach, nothing to warn about.
        let found: BTreeSet<_> = [n("e1@127.0.0.1")].into();
        assert_eq!(check_answer(&own, &found), None);
    }

    #[test]
    fn pod_dns_names_with_dns_a_discovery_disagree() {
        let own = n("app@10-4-2-17.app-headless.ns.svc.cluster.local");
        let w = check_forms(&own, &[HostForm::Ipv4, HostForm::Ipv6], "dns_a").unwrap();
        assert!(w.contains("can never connect"), "{w}");
        assert_eq!(
            check_forms(&n("app@10.4.2.17"), &[HostForm::Ipv4], "dns_a"),
            None
        );
    }
}
