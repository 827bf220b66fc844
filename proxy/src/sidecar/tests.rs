use super::*;

fn rules(mode: Transparent) -> Rules {
    Rules {
        inbound_port: 15006,
        outbound_port: 15001,
        inbound_mode: mode,
        proxy_uid: Some(1337),
        mark: 0x539,
        tproxy_mark: 0x53a,
        exclude_ports: vec![15000, 22],
        exclude_inbound_ports: vec![],
        include_cidrs: vec![],
    }
}

#[test]
fn redirect_rules_spare_the_proxy_and_send_the_rest_to_its_ports() {
    let text = rules(Transparent::Redirect).nft();
    let expected = "\
# weft sidecar rules: outbound -> :15001, inbound (redirect) -> :15006
table inet weft
delete table inet weft
table inet weft {
    chain outbound {
        type nat hook output priority -100; policy accept;
        meta mark 0x539 return
        meta skuid 1337 return
        oifname \"lo\" ip daddr 127.0.0.0/8 return
        oifname \"lo\" ip6 daddr ::1 return
        tcp dport { 15000, 22, 15006, 15001 } return
        meta l4proto tcp redirect to :15001
    }
    chain inbound {
        type nat hook prerouting priority dstnat; policy accept;
        iifname \"lo\" return
        tcp dport { 15000, 22, 15006, 15001 } return
        meta l4proto tcp redirect to :15006
    }
}
";
    assert_eq!(text, expected);
    assert!(rules(Transparent::Redirect).routes().is_empty());
}

#[test]
fn tproxy_rules_mark_inbound_packets_and_route_them_locally() {
    let r = rules(Transparent::Tproxy);
    let text = r.nft();
    assert!(text.contains("type filter hook prerouting priority mangle;"), "{text}");
    assert!(
        text.contains("meta l4proto tcp socket transparent 1 meta mark set 0x53a accept"),
        "{text}"
    );
    assert!(
        text.contains("tproxy ip to :15006 meta mark set 0x53a accept"),
        "{text}"
    );
    assert!(
        text.contains("tproxy ip6 to :15006 meta mark set 0x53a accept"),
        "{text}"
    );
    assert!(!text.contains("redirect to :15006"), "{text}");
    let routes: Vec<String> = r.routes().iter().map(|a| a.join(" ")).collect();
    assert_eq!(
        routes,
        [
            "-4 rule add fwmark 0x53a lookup 133",
            "-4 route replace local 0.0.0.0/0 dev lo table 133",
            "-6 rule add fwmark 0x53a lookup 133",
            "-6 route replace local ::/0 dev lo table 133",
        ]
    );
}

#[test]
fn included_cidrs_limit_what_outbound_redirects_by_family() {
    let mut r = rules(Transparent::Redirect);
    r.include_cidrs = vec!["10.0.0.0/8".into(), "fd00::/64".into()];
    let text = r.nft();
    assert!(
        text.contains("ip daddr { 10.0.0.0/8 } meta l4proto tcp redirect to :15001"),
        "{text}"
    );
    assert!(
        text.contains("ip6 daddr { fd00::/64 } meta l4proto tcp redirect to :15001"),
        "{text}"
    );
    assert!(!text.contains("        meta l4proto tcp redirect to :15001"), "{text}");
}

#[test]
fn rules_that_would_catch_everything_or_nothing_are_refused() {
    let mut r = rules(Transparent::Redirect);
    r.outbound_port = 15006;
    assert!(r.check().expect_err("refused").contains("must differ"));
    let mut r = rules(Transparent::Redirect);
    r.mark = 0;
    assert!(r.check().expect_err("refused").contains("not 0"));
    let mut r = rules(Transparent::Redirect);
    r.include_cidrs = vec!["orders".into()];
    assert!(r.check().expect_err("refused").contains("--include-cidrs"));
    assert!(rules(Transparent::Tproxy).check().is_ok());
}

#[test]
fn marks_print_as_nft_reads_them() {
    let mut r = rules(Transparent::Redirect);
    r.mark = 1337;
    assert!(r.nft().contains("meta mark 0x539 return"));
}
