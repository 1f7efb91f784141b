//! The nftables rule set: service ports in, one `nft -f` script out.
//!
//! Layout of the table (family `ip`, name from the config, `ferry` by default):
//!
//! * base chains `nat-prerouting` / `nat-output` (priority dstnat) jump to `services`, which
//!   dispatches with one verdict map on `daddr . l4proto . dport` (ClusterIPs) and one on
//!   `l4proto . dport` for local node addresses (NodePorts) to a chain per service port;
//! * `svc-<h>`: marks traffic from outside the cluster CIDR for masquerade, sends clients with
//!   an affinity entry back to their endpoint, else picks one with `numgen random mod N`;
//! * `ext-<h>` (NodePort): marks for masquerade and goes to `svc-<h>`;
//! * `ep-<h>`: marks hairpin traffic (the endpoint talking to itself through the Service),
//!   records the client in the endpoint's affinity set (`aff-<h>-<timeout>`, dynamic, with
//!   timeout), and DNATs;
//! * `nat-postrouting` masquerades marked packets; `filter-{input,forward,output}` reject new
//!   connections to service ports that have no endpoints.
//!
//! [`Ruleset::script`] makes the update one transaction. The first time (or after a failure)
//! the whole table is replaced (`add table` + `delete table` + the table). Afterwards only the
//! difference is sent, as kube-proxy's nftables mode does: new sets and chains are added,
//! chains whose rules changed are flushed and refilled, chains and sets that disappeared are
//! flushed and deleted — an endpoint change touches three chains, not ten thousand, and
//! affinity sets keep their entries. Either way the kernel switches from the old rules to the
//! new ones atomically: no packet sees a half-written table.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::SocketAddrV4;

use sha2::{Digest, Sha256};

use super::model::ServicePort;
use super::ProxyConfig;

/// The packet mark bit that asks `nat-postrouting` to masquerade.
pub const MASQUERADE_MARK: u32 = 0x4000;

fn hash(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The chain of a service port.
pub fn service_chain(id: &str) -> String {
    format!("svc-{}", hash(id))
}

/// The NodePort chain of a service port.
pub fn external_chain(id: &str) -> String {
    format!("ext-{}", hash(id))
}

/// The chain of one endpoint of a service port.
pub fn endpoint_chain(id: &str, ep: &SocketAddrV4) -> String {
    format!("ep-{}", hash(&format!("{id}/{ep}")))
}

fn affinity_set(id: &str, ep: &SocketAddrV4, timeout: u32) -> String {
    format!("aff-{}-{timeout}", hash(&format!("{id}/{ep}")))
}

/// One chain: its head (hook declaration or comment) and rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chain {
    /// `type … hook …;` of a base chain, or `comment "…"`.
    pub head: Option<String>,
    /// The rules, in order.
    pub rules: Vec<String>,
}

/// A rendered rule set: the table body plus its chains and sets by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruleset {
    /// The table name.
    pub table: String,
    /// `table ip <name> { … }`.
    pub body: String,
    /// Every chain in the body.
    pub chains: BTreeMap<String, Chain>,
    /// Every set in the body, with its declaration (`type …; flags …; timeout …;`).
    pub sets: BTreeMap<String, String>,
}

impl Ruleset {
    /// The `nft -f` script that installs this rule set in one transaction: the whole table when
    /// `previous` (what the kernel has) is unknown, else only the difference.
    pub fn script(&self, previous: Option<&Ruleset>) -> String {
        let t = &self.table;
        let mut s = String::new();
        let _ = writeln!(s, "add table ip {t}");
        let Some(prev) = previous else {
            let _ = writeln!(s, "delete table ip {t}");
            s.push_str(&self.body);
            return s;
        };
        for (name, decl) in &self.sets {
            if !prev.sets.contains_key(name) {
                let _ = writeln!(s, "add set ip {t} {name} {{ {decl} }}");
            }
        }
        for (name, chain) in &self.chains {
            if !prev.chains.contains_key(name) {
                match &chain.head {
                    Some(h) if h.ends_with(';') => {
                        let _ = writeln!(s, "add chain ip {t} {name} {{ {h} }}");
                    }
                    Some(h) => {
                        let _ = writeln!(s, "add chain ip {t} {name} {{ {h}; }}");
                    }
                    None => {
                        let _ = writeln!(s, "add chain ip {t} {name}");
                    }
                }
            }
        }
        for (name, chain) in &self.chains {
            match prev.chains.get(name) {
                Some(old) if old.rules == chain.rules => continue,
                Some(_) => {
                    let _ = writeln!(s, "flush chain ip {t} {name}");
                }
                None => {}
            }
            for r in &chain.rules {
                let _ = writeln!(s, "add rule ip {t} {name} {r}");
            }
        }
        let gone: Vec<&String> = prev.chains.keys().filter(|c| !self.chains.contains_key(*c)).collect();
        for c in &gone {
            let _ = writeln!(s, "flush chain ip {t} {c}");
        }
        for c in &gone {
            let _ = writeln!(s, "delete chain ip {t} {c}");
        }
        for set in prev.sets.keys().filter(|n| !self.sets.contains_key(*n)) {
            let _ = writeln!(s, "delete set ip {t} {set}");
        }
        s
    }
}

impl Ruleset {
    /// A periodic repair: every chain flushed and rewritten from the whole body (sets are
    /// re-declared, which keeps their entries), then what `previous` had and this lacks deleted.
    pub fn resync_script(&self, previous: &Ruleset) -> String {
        let t = &self.table;
        let mut s = format!("add table ip {t}\nflush table ip {t}\n");
        s.push_str(&self.body);
        for c in previous.chains.keys().filter(|c| !self.chains.contains_key(*c)) {
            let _ = writeln!(s, "delete chain ip {t} {c}");
        }
        for set in previous.sets.keys().filter(|n| !self.sets.contains_key(*n)) {
            let _ = writeln!(s, "delete set ip {t} {set}");
        }
        s
    }
}

/// The script that removes the table (what `proxy cleanup` runs): creating it first makes the
/// delete succeed when there is nothing to remove.
pub fn cleanup_script(table: &str) -> String {
    format!("add table ip {table}\ndelete table ip {table}\n")
}

/// Render the rule set for these service ports.
pub fn render(config: &ProxyConfig, ports: &[ServicePort]) -> Ruleset {
    let mark = format!("0x{MASQUERADE_MARK:08x}");
    let mut chains = BTreeMap::new();
    let mut sets = BTreeMap::new();
    let mut b = String::new();
    let mut chain = |b: &mut String, name: &str, head: Option<&str>, rules: &[String]| {
        chains.insert(name.to_string(), Chain { head: head.map(str::to_string), rules: rules.to_vec() });
        let _ = writeln!(b, "\tchain {name} {{");
        if let Some(h) = head {
            let _ = writeln!(b, "\t\t{h}");
        }
        for r in rules {
            let _ = writeln!(b, "\t\t{r}");
        }
        let _ = writeln!(b, "\t}}");
    };
    let _ = writeln!(b, "table ip {} {{", config.table);
    let _ = writeln!(b, "\tcomment \"service proxy of ferry-nodelet; replaced as a whole on every sync\"");

    // Affinity sets first (chains refer to them).
    for p in ports {
        let Some(t) = p.affinity_seconds else { continue };
        for ep in &p.endpoints {
            let name = affinity_set(&p.id, ep, t);
            let _ = writeln!(b, "\tset {name} {{");
            let _ = writeln!(b, "\t\ttype ipv4_addr");
            let _ = writeln!(b, "\t\tflags dynamic,timeout");
            let _ = writeln!(b, "\t\ttimeout {t}s");
            let _ = writeln!(b, "\t}}");
            sets.insert(name, format!("type ipv4_addr; flags dynamic,timeout; timeout {t}s;"));
        }
    }

    let nodeport_match = if config.nodeport_addresses.is_empty() {
        "fib daddr type local ip daddr != 127.0.0.0/8".to_string()
    } else {
        let list: Vec<String> = config.nodeport_addresses.iter().map(ToString::to_string).collect();
        format!("ip daddr {{ {} }}", list.join(", "))
    };
    let outside_cluster = if config.masquerade_all {
        Some(String::new())
    } else if config.cluster_cidrs.is_empty() {
        None
    } else {
        let list: Vec<String> = config.cluster_cidrs.iter().map(ToString::to_string).collect();
        Some(format!("ip saddr != {{ {} }} ", list.join(", ")))
    };

    chain(
        &mut b,
        "nat-prerouting",
        Some("type nat hook prerouting priority -100; policy accept;"),
        &["jump services".into()],
    );
    chain(&mut b, "nat-output", Some("type nat hook output priority -100; policy accept;"), &["jump services".into()]);
    chain(
        &mut b,
        "nat-postrouting",
        Some("type nat hook postrouting priority 100; policy accept;"),
        &[
            format!("meta mark & {mark} == 0x00000000 return"),
            format!("meta mark set meta mark ^ {mark}"),
            "masquerade fully-random".into(),
        ],
    );
    chain(&mut b, "mark-for-masquerade", None, &[format!("meta mark set meta mark | {mark}")]);

    // Service ports without endpoints: new connections are rejected, as kube-proxy does.
    let no_ep_cluster: Vec<String> = ports
        .iter()
        .filter(|p| p.endpoints.is_empty())
        .flat_map(|p| p.cluster_ips.iter().map(move |ip| format!("{ip} . {} . {}", p.protocol.nft(), p.port)))
        .collect();
    let no_ep_node: Vec<String> = ports
        .iter()
        .filter(|p| p.endpoints.is_empty())
        .filter_map(|p| Some(format!("{} . {}", p.protocol.nft(), p.node_port?)))
        .collect();
    let mut reject = Vec::new();
    if !no_ep_cluster.is_empty() {
        reject
            .push(format!("ct state new ip daddr . meta l4proto . th dport {{ {} }} reject", no_ep_cluster.join(", ")));
    }
    if !no_ep_node.is_empty() {
        reject.push(format!(
            "ct state new {nodeport_match} meta l4proto . th dport {{ {} }} reject",
            no_ep_node.join(", ")
        ));
    }
    for hook in ["input", "forward", "output"] {
        let head = format!("type filter hook {hook} priority -1; policy accept;");
        chain(&mut b, &format!("filter-{hook}"), Some(&head), &reject);
    }

    let with_eps: Vec<&ServicePort> = ports.iter().filter(|p| !p.endpoints.is_empty()).collect();
    let cluster_map: Vec<String> = with_eps
        .iter()
        .flat_map(|p| {
            p.cluster_ips
                .iter()
                .map(move |ip| format!("{ip} . {} . {} : goto {}", p.protocol.nft(), p.port, service_chain(&p.id)))
        })
        .collect();
    let node_map: Vec<String> = with_eps
        .iter()
        .filter_map(|p| Some(format!("{} . {} : goto {}", p.protocol.nft(), p.node_port?, external_chain(&p.id))))
        .collect();
    let mut dispatch = Vec::new();
    if !cluster_map.is_empty() {
        dispatch.push(format!("ip daddr . meta l4proto . th dport vmap {{ {} }}", cluster_map.join(", ")));
    }
    if !node_map.is_empty() {
        dispatch.push(format!("{nodeport_match} meta l4proto . th dport vmap {{ {} }}", node_map.join(", ")));
    }
    chain(&mut b, "services", None, &dispatch);

    for p in with_eps {
        let svc = service_chain(&p.id);
        let comment = format!("comment \"{}\"", p.id);
        let mut rules = Vec::new();
        if let Some(m) = &outside_cluster {
            rules.push(format!("{m}jump mark-for-masquerade"));
        }
        if let Some(t) = p.affinity_seconds {
            for ep in &p.endpoints {
                rules.push(format!("ip saddr @{} goto {}", affinity_set(&p.id, ep, t), endpoint_chain(&p.id, ep)));
            }
        }
        if p.endpoints.len() == 1 {
            rules.push(format!("goto {}", endpoint_chain(&p.id, &p.endpoints[0])));
        } else {
            let arms: Vec<String> = p
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, ep)| format!("{i} : goto {}", endpoint_chain(&p.id, ep)))
                .collect();
            rules.push(format!("numgen random mod {} vmap {{ {} }}", p.endpoints.len(), arms.join(", ")));
        }
        chain(&mut b, &svc, Some(&comment), &rules);
        if p.node_port.is_some() {
            chain(
                &mut b,
                &external_chain(&p.id),
                Some(&comment),
                &["jump mark-for-masquerade".into(), format!("goto {svc}")],
            );
        }
        for ep in &p.endpoints {
            let mut rules = vec![format!("ip saddr {} jump mark-for-masquerade", ep.ip())];
            if let Some(t) = p.affinity_seconds {
                rules.push(format!("update @{} {{ ip saddr }}", affinity_set(&p.id, ep, t)));
            }
            rules.push(format!("meta l4proto {} dnat to {ep}", p.protocol.nft()));
            let comment = format!("comment \"{} -> {ep}\"", p.id);
            chain(&mut b, &endpoint_chain(&p.id, ep), Some(&comment), &rules);
        }
    }
    let _ = writeln!(b, "}}");
    Ruleset { table: config.table.clone(), body: b, chains, sets }
}

#[cfg(test)]
mod tests {
    use super::super::model::Protocol;
    use super::*;

    fn config() -> ProxyConfig {
        let mut c = ProxyConfig::new("ferry-test");
        c.cluster_cidrs = vec!["10.200.0.0/16".parse().expect("cidr")];
        c
    }

    fn ports() -> Vec<ServicePort> {
        vec![
            ServicePort {
                id: "default/dns:dns".into(),
                protocol: Protocol::Udp,
                cluster_ips: vec!["10.96.0.10".parse().expect("ip")],
                port: 53,
                node_port: None,
                affinity_seconds: None,
                endpoints: vec!["10.200.0.1:5353".parse().expect("ep")],
            },
            ServicePort {
                id: "default/empty:80".into(),
                protocol: Protocol::Tcp,
                cluster_ips: vec!["10.96.0.11".parse().expect("ip")],
                port: 80,
                node_port: Some(30001),
                affinity_seconds: None,
                endpoints: vec![],
            },
            ServicePort {
                id: "default/web:http".into(),
                protocol: Protocol::Tcp,
                cluster_ips: vec!["10.96.0.5".parse().expect("ip")],
                port: 80,
                node_port: Some(30080),
                affinity_seconds: Some(60),
                endpoints: vec!["10.200.1.5:8080".parse().expect("ep"), "10.200.1.6:8080".parse().expect("ep")],
            },
        ]
    }

    const GOLDEN: &str = r#"table ip ferry-test {
	comment "service proxy of ferry-nodelet; replaced as a whole on every sync"
	set aff-5c8b0b0a3b5c3f1b-60 {
		type ipv4_addr
		flags dynamic,timeout
		timeout 60s
	}
	set aff-0d0f4f59d1fbd6d6-60 {
		type ipv4_addr
		flags dynamic,timeout
		timeout 60s
	}
	chain nat-prerouting {
		type nat hook prerouting priority -100; policy accept;
		jump services
	}
	chain nat-output {
		type nat hook output priority -100; policy accept;
		jump services
	}
	chain nat-postrouting {
		type nat hook postrouting priority 100; policy accept;
		meta mark & 0x00004000 == 0x00000000 return
		meta mark set meta mark ^ 0x00004000
		masquerade fully-random
	}
	chain mark-for-masquerade {
		meta mark set meta mark | 0x00004000
	}
	chain filter-input {
		type filter hook input priority -1; policy accept;
		ct state new ip daddr . meta l4proto . th dport { 10.96.0.11 . tcp . 80 } reject
		ct state new fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport { tcp . 30001 } reject
	}
	chain filter-forward {
		type filter hook forward priority -1; policy accept;
		ct state new ip daddr . meta l4proto . th dport { 10.96.0.11 . tcp . 80 } reject
		ct state new fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport { tcp . 30001 } reject
	}
	chain filter-output {
		type filter hook output priority -1; policy accept;
		ct state new ip daddr . meta l4proto . th dport { 10.96.0.11 . tcp . 80 } reject
		ct state new fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport { tcp . 30001 } reject
	}
	chain services {
		ip daddr . meta l4proto . th dport vmap { 10.96.0.10 . udp . 53 : goto svc-SVC_DNS, 10.96.0.5 . tcp . 80 : goto svc-SVC_WEB }
		fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap { tcp . 30080 : goto ext-SVC_WEB }
	}
	chain svc-SVC_DNS {
		comment "default/dns:dns"
		ip saddr != { 10.200.0.0/16 } jump mark-for-masquerade
		goto ep-EP_DNS
	}
	chain ep-EP_DNS {
		comment "default/dns:dns -> 10.200.0.1:5353"
		ip saddr 10.200.0.1 jump mark-for-masquerade
		meta l4proto udp dnat to 10.200.0.1:5353
	}
	chain svc-SVC_WEB {
		comment "default/web:http"
		ip saddr != { 10.200.0.0/16 } jump mark-for-masquerade
		ip saddr @aff-5c8b0b0a3b5c3f1b-60 goto ep-EP_WEB1
		ip saddr @aff-0d0f4f59d1fbd6d6-60 goto ep-EP_WEB2
		numgen random mod 2 vmap { 0 : goto ep-EP_WEB1, 1 : goto ep-EP_WEB2 }
	}
	chain ext-SVC_WEB {
		comment "default/web:http"
		jump mark-for-masquerade
		goto svc-SVC_WEB
	}
	chain ep-EP_WEB1 {
		comment "default/web:http -> 10.200.1.5:8080"
		ip saddr 10.200.1.5 jump mark-for-masquerade
		update @aff-5c8b0b0a3b5c3f1b-60 { ip saddr }
		meta l4proto tcp dnat to 10.200.1.5:8080
	}
	chain ep-EP_WEB2 {
		comment "default/web:http -> 10.200.1.6:8080"
		ip saddr 10.200.1.6 jump mark-for-masquerade
		update @aff-0d0f4f59d1fbd6d6-60 { ip saddr }
		meta l4proto tcp dnat to 10.200.1.6:8080
	}
}
"#;

    /// The golden text with the hashed names filled in.
    fn golden() -> String {
        let p = ports();
        let web = &p[2];
        let aff = |ep: &SocketAddrV4| affinity_set(&web.id, ep, 60);
        GOLDEN
            .replace("svc-SVC_DNS", &service_chain("default/dns:dns"))
            .replace("ep-EP_DNS", &endpoint_chain("default/dns:dns", &p[0].endpoints[0]))
            .replace("svc-SVC_WEB", &service_chain(&web.id))
            .replace("ext-SVC_WEB", &external_chain(&web.id))
            .replace("ep-EP_WEB1", &endpoint_chain(&web.id, &web.endpoints[0]))
            .replace("ep-EP_WEB2", &endpoint_chain(&web.id, &web.endpoints[1]))
            .replace("aff-5c8b0b0a3b5c3f1b-60", &aff(&web.endpoints[0]))
            .replace("aff-0d0f4f59d1fbd6d6-60", &aff(&web.endpoints[1]))
    }

    #[test]
    fn golden_rule_set() {
        let rs = render(&config(), &ports());
        assert_eq!(rs.body, golden(), "rendered:\n{}", rs.body);
        assert_eq!(rs.sets.len(), 2);
        assert!(rs.chains.contains_key("services") && rs.chains.contains_key(&external_chain("default/web:http")));
    }

    #[test]
    fn names_are_stable_and_distinct() {
        let a: SocketAddrV4 = "10.0.0.1:80".parse().expect("ep");
        assert_eq!(service_chain("ns/a:http"), service_chain("ns/a:http"));
        assert_ne!(service_chain("ns/a:http"), service_chain("ns/b:http"));
        assert_ne!(endpoint_chain("ns/a:http", &a), endpoint_chain("ns/b:http", &a));
        assert_eq!(service_chain("x").len(), "svc-".len() + 16);
    }

    #[test]
    fn full_then_incremental_scripts() {
        let first = render(&config(), &ports());
        let full = first.script(None);
        assert!(full.starts_with("add table ip ferry-test\ndelete table ip ferry-test\ntable ip ferry-test {"));
        assert_eq!(first.script(Some(&first)), "add table ip ferry-test\n", "no change, nothing sent");
        // web loses 10.200.1.6 and gains 10.200.1.7: only its service chain changes.
        let mut next = ports();
        next[2].endpoints = vec!["10.200.1.5:8080".parse().expect("ep"), "10.200.1.7:8080".parse().expect("ep")];
        let second = render(&config(), &next);
        let id = "default/web:http";
        let (gone, new): (SocketAddrV4, SocketAddrV4) =
            ("10.200.1.6:8080".parse().expect("ep"), "10.200.1.7:8080".parse().expect("ep"));
        let (t, svc) = ("ferry-test", service_chain(id));
        let (old_ep, new_ep) = (endpoint_chain(id, &gone), endpoint_chain(id, &new));
        let (old_aff, new_aff) = (affinity_set(id, &gone, 60), affinity_set(id, &new, 60));
        let keep_aff = affinity_set(id, &"10.200.1.5:8080".parse().expect("ep"), 60);
        let keep_ep = endpoint_chain(id, &"10.200.1.5:8080".parse().expect("ep"));
        // Chains are visited by name; which of the two endpoint chains sorts first varies.
        let svc_rules = [
            format!("add rule ip {t} {svc} ip saddr != {{ 10.200.0.0/16 }} jump mark-for-masquerade"),
            format!("add rule ip {t} {svc} ip saddr @{keep_aff} goto {keep_ep}"),
            format!("add rule ip {t} {svc} ip saddr @{new_aff} goto {new_ep}"),
            format!("add rule ip {t} {svc} numgen random mod 2 vmap {{ 0 : goto {keep_ep}, 1 : goto {new_ep} }}"),
        ]
        .join("\n");
        let svc_rules = format!("flush chain ip {t} {svc}\n{svc_rules}\n");
        let new_rules = [
            format!("add rule ip {t} {new_ep} ip saddr 10.200.1.7 jump mark-for-masquerade"),
            format!("add rule ip {t} {new_ep} update @{new_aff} {{ ip saddr }}"),
            format!("add rule ip {t} {new_ep} meta l4proto tcp dnat to 10.200.1.7:8080"),
        ]
        .join("\n");
        let new_rules = format!("{new_rules}\n");
        let (first_part, second_part) =
            if new_ep < svc { (new_rules.clone(), svc_rules.clone()) } else { (svc_rules.clone(), new_rules.clone()) };
        let expected = format!(
            "add table ip {t}\nadd set ip {t} {new_aff} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}\n\
             add chain ip {t} {new_ep} {{ comment \"{id} -> {new}\"; }}\n{first_part}{second_part}\
             flush chain ip {t} {old_ep}\ndelete chain ip {t} {old_ep}\ndelete set ip {t} {old_aff}\n"
        );
        assert_eq!(second.script(Some(&first)), expected);
        let mut single = ports();
        single[2].endpoints.pop();
        assert!(!render(&config(), &single).body.contains("numgen random mod 1"), "one endpoint: plain goto");
    }

    #[test]
    fn nodeport_addresses_and_masquerade_all() {
        let mut c = config();
        c.nodeport_addresses = vec!["10.201.3.1/32".parse().expect("cidr")];
        c.masquerade_all = true;
        let rs = render(&c, &ports());
        assert!(rs.body.contains("ip daddr { 10.201.3.1/32 } meta l4proto . th dport vmap { tcp . 30080"));
        assert!(!rs.body.contains("fib daddr"));
        assert!(rs.body.contains("\t\tjump mark-for-masquerade\n\t\tgoto ep-"), "{}", rs.body);
    }

    #[test]
    fn empty_rule_set_is_valid_shape() {
        let rs = render(&config(), &[]);
        assert!(rs.body.contains("chain services {\n\t}"));
        assert!(rs.sets.is_empty());
    }
}
