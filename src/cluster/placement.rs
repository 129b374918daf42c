//! Which node should serve an org: rendezvous (highest-random-weight)
//! hashing over the live nodes. Every node computes the same answer from
//! the same membership, with no coordination, and a change of membership
//! moves only the orgs it must: a node that joins takes just the orgs
//! that now prefer it, a node that leaves hands on just its own. (The
//! claim in etcd, bound to the owner's lease, is what makes ownership
//! exclusive; this only says who should try.) Pure: no I/O.

use siphasher::sip::SipHasher13;
use std::hash::Hasher;

/// The weight of `node` for `org`: a keyed hash of both (a fixed key: the
/// placement must be the same on every node and across versions).
fn weight(node: &str, org: &str) -> u64 {
    let mut h = SipHasher13::new_with_keys(0x6c62_726f_6b65_7231, 0x706c_6163_656d_656e);
    h.write(node.as_bytes());
    h.write_u8(0xff);
    h.write(org.as_bytes());
    h.finish()
}

/// The node that should serve `org` among `nodes` (none if there are none).
/// Ties (equal weights) go to the smaller name, so the answer never
/// depends on the order of `nodes`.
pub fn preferred<'a>(org: &str, nodes: &'a [String]) -> Option<&'a str> {
    nodes.iter().map(|n| (weight(n, org), std::cmp::Reverse(n.as_str()))).max().map(|(_, std::cmp::Reverse(n))| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn orgs() -> Vec<String> {
        (0..3000).map(|i| format!("org-{i}")).collect()
    }

    #[test]
    fn the_answer_does_not_depend_on_the_order_of_the_nodes() {
        let a = nodes(&["n1", "n2", "n3"]);
        let b = nodes(&["n3", "n1", "n2"]);
        assert!(orgs().iter().all(|o| preferred(o, &a) == preferred(o, &b)));
        assert_eq!(preferred("acme", &[]), None);
    }

    #[test]
    fn orgs_spread_evenly() {
        let n = nodes(&["n1", "n2", "n3"]);
        for node in &n {
            let mine = orgs().iter().filter(|o| preferred(o, &n) == Some(node.as_str())).count();
            assert!((800..1200).contains(&mine), "{node} serves {mine} of 3000");
        }
    }

    #[test]
    fn a_node_leaving_moves_only_its_own_orgs_and_a_node_joining_only_takes() {
        let three = nodes(&["n1", "n2", "n3"]);
        let two = nodes(&["n1", "n3"]);
        for o in orgs() {
            let before = preferred(&o, &three).unwrap();
            let after = preferred(&o, &two).unwrap();
            if before != "n2" {
                assert_eq!(before, after, "{o} moved though its node stayed");
            }
            // Joining again: every org either stays or moves to the newcomer.
            let back = preferred(&o, &three).unwrap();
            assert!(back == after || back == "n2", "{o} moved between old nodes");
        }
    }
}
