//! The labels of DESIGN.md: every child carries them, the pods also the role.

use std::collections::BTreeMap;

/// `app.kubernetes.io/name`.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the group's name.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`], also the field manager's name.
pub const MANAGED_BY: &str = "dledger-operator";
/// The member's role, set by the operator after every status poll.
pub const ROLE_LABEL: &str = "dledger.io/role";

/// The labels that select a group's pods (stable: a StatefulSet selector is immutable).
pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_string(), "dledger".to_string()),
        (INSTANCE_LABEL.to_string(), name.to_string()),
    ])
}

/// [`selector_labels`] as a label selector string (`k=v,k=v`), for listing a group's pods.
pub fn selector_string(name: &str) -> String {
    selector_labels(name)
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The labels every child carries.
pub fn common_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = selector_labels(name);
    labels.insert(MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string());
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_labels_are_the_selector_plus_the_manager() {
        let labels = common_labels("orders");
        assert_eq!(labels.len(), 3);
        assert_eq!(labels[NAME_LABEL], "dledger");
        assert_eq!(labels[INSTANCE_LABEL], "orders");
        assert_eq!(labels[MANAGED_BY_LABEL], "dledger-operator");
        assert!(selector_labels("orders")
            .iter()
            .all(|(k, v)| labels[k] == *v));
    }

    #[test]
    fn the_selector_string_lists_the_selector_labels() {
        assert_eq!(
            selector_string("orders"),
            "app.kubernetes.io/instance=orders,app.kubernetes.io/name=dledger"
        );
    }
}
