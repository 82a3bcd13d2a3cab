//! The PodDisruptionBudget: a drain takes at most one member at a time.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{selector_labels, Group};

/// The PDB `<name>` with `maxUnavailable: 1`.
pub fn pod_disruption_budget(group: &Group<'_>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: group.child_meta(group.name.clone()),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(&group.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::specs::fixtures;

    #[test]
    fn at_most_one_member_is_disrupted() {
        let group = fixtures::minimal();
        let pdb = pod_disruption_budget(&Group::of(&group).unwrap());
        assert_eq!(pdb.metadata.name.as_deref(), Some("orders"));
        assert_eq!(
            pdb.metadata.owner_references.unwrap()[0].kind,
            "DLedgerGroup"
        );
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.min_available, None);
        assert_eq!(
            spec.selector.unwrap().match_labels.unwrap(),
            selector_labels("orders")
        );
    }
}
