"""Ultra Ethernet transport (csrc/uet.pxd): frames, selective retransmission, trimming,
the built-in UET scenarios, and conservation over random incasts."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ethlink import frames as fr, scenarios
from ethlink.frames import fields as F
from ethlink.scenario import Scenario, ScenarioError
from ethlink.sim import Simulation

DATA_ROW = {"frame_kind": "uet", "src_mac": 0x020000000001, "dst_mac": 0x020000000002, "pcp": 1,
            "ip_src": 0x0A000001, "ip_dst": 0x0A000002, "ecn": 2, "udp_sport": 0xC123, "pds_psn": 7,
            "pds_spdcid": 3, "pds_dpdcid": 4, "ses_opcode": 1, "ses_som": 0, "ses_eom": 1,
            "ses_buffer_offset": 28672, "payload_len": 8}


def test_data_frame_golden_vector():
    """Exact bytes: Ether/802.1Q/IPv4/UDP 4793/PDS RUD request/SES standard/payload."""
    raw = fr.build_frame(DATA_ROW)
    assert raw.hex() == (
        "020000000002020000000001810020000800456a005c00004000401126250a0000010a000002c12312b900486cba"
        "11880000000000070003000401020000000000000000000000000000000070000000000000000000000000000000"
        "000000000000000000000708090a0b0c0d0e")
    assert len(raw) + 4 == F.uet_frame_bytes("uet", 8) == 106 + 8
    pds = raw[46:58]
    # prologue: type 2 (5 bits), next_hdr 3 (4 bits), rsvd 2, retrans 0, ackreq 1, syn 0, rsvd 2
    assert pds[:2] == bytes([(2 << 3) | (3 >> 1), ((3 & 1) << 7) | (1 << 3)])
    assert int.from_bytes(pds[4:8], "big") == 7                   # PSN
    ses = raw[58:102]
    assert ses[0] == 0x01 and ses[1] == 0x02                     # UET_WRITE; EOM set, SOM clear
    assert int.from_bytes(ses[12:20], "big") == 28672            # buffer offset
    p = fr.decode(raw)
    assert p["UDP"].dport == 4793 and p["PDSRudReq"].psn == 7 and p["SESStd"].eom == 1


def test_ack_and_nack_golden_vectors():
    ack = fr.build_frame({"frame_kind": "uet_ctrl", "pds_type": 8, "src_mac": 2, "dst_mac": 1, "ip_src": 0x0A000002,
                          "ip_dst": 0x0A000001, "pds_cack_psn": 5, "pds_ack_psn_offset": 3,
                          "pds_sack_bitmap": 0b101, "pds_spdcid": 4, "pds_dpdcid": 3})
    assert ack.hex() == ("0000000000010000000000028100000008004568003c00004000401126470a0000020a000001c00012b9"
                         "0028d8cc4000000300000005000400030000000100000000000000050000000000000000")
    p = fr.decode(ack)["PDSAckCC"]
    assert (p.type, p.cack_psn, p.ack_psn_offset, p.sack_bitmap) == (8, 5, 3, 5)
    nack = fr.build_frame({"frame_kind": "uet_ctrl", "pds_type": 10, "ip_src": 0x0A000002, "ip_dst": 0x0A000001,
                           "pds_psn": 9, "pds_nack_code": 1})
    assert nack.hex() == ("0000000000000000000000008100000008004568002c00004000401126570a0000020a000001c00012b9"
                          "0018c7f850000100000000090000000000000000")
    n = fr.decode(nack)["PDSNack"]
    assert (n.type, n.nack_code, n.nack_psn) == (10, 1, 9)


def _incast(senders=4, size="256KiB", buffer="32MiB", trim=False, **uet):
    d = {"name": "t", "topology": {"kind": "star", "hosts": senders + 1, "rate": "400G", "delay": "100ns"},
         "switch": {"buffer": buffer, "latency": "300ns"}, "host": {"mtu": 4096},
         "uet": {"trim": trim, "rto": "50us", **uet},
         "workload": [{"kind": "incast", "receiver": "h0", "senders": senders, "size": size,
                       "transport": "uet", "prio": 1}]}
    return Scenario.from_dict(d)


def _trace(sc):
    sim = Simulation(sc, trace="hop")
    parts = []
    res = sim.run(trace_sink=parts.append)
    return res, np.concatenate(parts)


def test_trimmed_packet_is_retransmitted_alone():
    """A trimmed PSN is NACKed and sent again by itself: every retransmitted data frame is
    a PSN that was trimmed before (no go-back-N), and it is sent again once per trim."""
    res, recs = _trace(_incast(senders=4, size="128KiB", buffer="200KiB", trim=True))
    s = res.summary
    assert s["uet"]["trimmed_packets"] > 0 and s["timeouts"] == 0
    data = recs[(recs["kind"] == 7)]
    trims = data[data["event"] == 13]
    hosts = np.nonzero(res.nodes["kind"] == 0)[0]
    src_enq = data[(data["event"] == 0) & np.isin(data["node"], hosts)]   # data frames leave hosts only
    retx = src_enq[src_enq["syndrome"] & 1 == 1]
    trimmed_keys = {(int(r["flow"]), int(r["psn"])) for r in trims}
    assert len(retx) == s["uet"]["selective_retransmissions"] == len(trims)
    assert {(int(r["flow"]), int(r["psn"])) for r in retx} == trimmed_keys
    # the NACKs name exactly the trimmed PSNs
    nacks = recs[(recs["kind"] == 8) & (recs["opcode"] == 10) & (recs["event"] == 5)]
    assert len(nacks) == len(trims)


def test_drop_without_trimming_recovers_by_timer_selectively():
    res, recs = _trace(_incast(senders=4, size="128KiB", buffer="200KiB", trim=False))
    s = res.summary
    assert s["flows_completed"] == 4 and s["drops"] and s["timeouts"] > 0
    dropped = recs[(recs["kind"] == 7) & (recs["event"] == 3)]
    # only dropped PSNs are sent again (plus at most the copies of those dropped again)
    assert s["uet"]["selective_retransmissions"] == len(dropped)
    assert s["conservation"]["residual"] == 0


def test_trim_accounting_and_conservation():
    s = Simulation(_incast(senders=8, size="256KiB", buffer="300KiB", trim=True)).run().summary
    c = s["conservation"]
    assert s["uet"]["trimmed_bytes"] == c["trimmed_bytes"] > 0
    assert c["retransmitted_bytes"] == c["trimmed_bytes"]            # each trimmed payload sent again once
    assert c["dropped_bytes"] == 0 and c["residual"] == 0
    assert s["flows_completed"] == 8 and s["uet"]["nacks"] == s["uet"]["trimmed_packets"]


def test_incast_trim_builtin_against_no_trimming():
    trim = Simulation(scenarios.load("incast-trim")).run().summary
    plain = Simulation(scenarios.load("incast-trim", ["uet.trim=false"])).run().summary
    assert trim["flows_completed"] == trim["flows_total"] == plain["flows_completed"]
    assert trim["timeouts"] == 0 and plain["timeouts"] > 0
    assert trim["conservation"]["retransmitted_bytes"] == trim["uet"]["trimmed_bytes"] > 0
    assert trim["conservation"]["residual"] == plain["conservation"]["residual"] == 0
    assert trim["fct_ps"]["max"] < plain["fct_ps"]["max"]


def test_permutation_uet_spraying_beats_per_flow_ecmp():
    uet = Simulation(scenarios.load("permutation-uet")).run().summary
    roce = Simulation(scenarios.load("permutation-uet", ["workload.0.transport=roce"])).run().summary
    assert uet["flows_completed"] == roce["flows_completed"] == uet["flows_total"]
    assert uet["fct_ps"]["p99"] < 0.6 * roce["fct_ps"]["p99"]
    assert uet["conservation"]["residual"] == 0


def test_uet_spray_off_keeps_one_path_per_flow():
    """uet.spray=false: UET packets follow the per-flow ECMP hash like RoCE."""
    on = Simulation(scenarios.load("permutation-uet")).run().summary
    off = Simulation(scenarios.load("permutation-uet", ["uet.spray=false"])).run().summary
    assert off["fct_ps"]["p99"] > on["fct_ps"]["p99"]


@pytest.mark.parametrize("name, sets", [("incast-trim", []), ("fairness-nscc", ["run.until=1ms"])])
def test_determinism(name, sets):
    a = Simulation(scenarios.load(name, sets)).run()
    b = Simulation(scenarios.load(name, sets)).run()
    for k in ("events", "uet", "conservation", "fct_ps"):
        assert a.summary[k] == b.summary[k]
    assert np.array_equal(a.qps, b.qps)


@pytest.mark.parametrize("bad, field", [
    ({"trim_bytes": 40}, "uet.trim_bytes"), ({"trim_prio": 9}, "uet.trim_prio"),
    ({"rto": 0}, "uet.rto"), ({"sprays": True}, "uet.sprays"), ({"window": -1}, "uet.window"),
])
def test_bad_uet_values_name_the_field(bad, field):
    d = {"topology": {"kind": "star", "hosts": 3}, "uet": bad,
         "workload": [{"kind": "incast", "size": 4096, "transport": "uet"}]}
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        Scenario.from_dict(d)


def test_uet_takes_write_only():
    d = {"topology": {"kind": "star", "hosts": 3},
         "workload": [{"kind": "incast", "size": 4096, "transport": "uet", "verb": "read"}]}
    with pytest.raises(ScenarioError, match="uet"):
        Scenario.from_dict(d)


FABRICS = {
    "star": {"kind": "star", "hosts": 12},
    "leaf-spine": {"kind": "leaf-spine", "leaves": 2, "hosts_per_leaf": 6, "spines": 2},
    "leaf-spine-thin": {"kind": "leaf-spine", "leaves": 3, "hosts_per_leaf": 4, "spines": 1},
    "fat-tree": {"kind": "fat-tree", "k": 4},
}


@settings(max_examples=12, deadline=None)
@given(fabric=st.sampled_from(sorted(FABRICS)), senders=st.integers(2, 11), kib=st.integers(8, 96),
       buf_kib=st.integers(40, 600), trim=st.booleans(), nscc=st.booleans())
def test_every_message_completes_and_bytes_are_conserved(fabric, senders, kib, buf_kib, trim, nscc):
    d = {"topology": FABRICS[fabric], "switch": {"buffer": f"{buf_kib}KiB"}, "host": {"mtu": 4096},
         "uet": {"trim": trim, "rto": "40us", "nscc": {"enabled": nscc}},
         "workload": [{"kind": "incast", "receiver": "h0", "senders": senders, "size": f"{kib}KiB",
                       "transport": "uet"}]}
    s = Simulation(Scenario.from_dict(d)).run().summary
    assert s["flows_completed"] == s["flows_total"]
    assert s["conservation"]["residual"] == 0
    if trim:
        assert s["conservation"]["retransmitted_bytes"] >= s["uet"]["trimmed_bytes"]


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """incast-trim with trimming, 4 senders of 128 KiB, traced hop by hop, in a directory."""
    from ethlink import cli
    from click.testing import CliRunner
    out = tmp_path_factory.mktemp("trim")
    r = CliRunner().invoke(cli.main, ["run", "incast-trim", "-o", str(out), "--trace", "hop",
                                      "--set", "workload.0.senders=4", "--set", "workload.0.size=128KiB",
                                      "--set", "switch.buffer=200KiB"])
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark not installed")
def test_pcap_of_uet_frames_decodes_in_tshark(traced, tmp_path):
    """Data, trimmed headers, ACK_CC and NACK frames: Ethernet/802.1Q/IPv4/UDP decode with
    nothing malformed. tshark 4.0 has no UET dissector, so port 4793's payload is decoded
    as data (without -d, its heuristics mistake some entropy source ports for other
    protocols)."""
    from ethlink import cli
    from click.testing import CliRunner
    caps = []
    for node in ("sw0", "h0"):
        pcap = tmp_path / f"{node}.pcap"
        r = CliRunner().invoke(cli.main, ["pcap", str(traced / "trace.arrow"), "--node", node, "--port-index", "0",
                                          "-o", str(pcap)])
        assert r.exit_code == 0, r.output
        p = subprocess.run(["tshark", "-r", str(pcap), "-d", "udp.port==4793,data", "-T", "fields",
                            "-e", "frame.len", "-e", "udp.dstport", "-e", "ip.dsfield.dscp", "-e", "_ws.malformed",
                            "-e", "_ws.expert.severity"], capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        caps.append([ln.split("\t") for ln in p.stdout.splitlines()])
    sw, h0 = caps
    assert sw and h0 and all(ln[1] == "4793" and ln[3] == "" and ln[4] == "" for ln in sw + h0)
    trimmed = [ln for ln in sw if ln[0] == "102"]                  # 106 B with the FCS, not captured
    assert trimmed and all(ln[2] == str(F.UET_TRIMMED_DSCP) for ln in trimmed)
    assert {ln[0] for ln in h0} == {"78", "62"}                    # ACK_CC and NACK (FCS not captured)


def test_replay_of_a_uet_trace_reproduces_the_run(traced, tmp_path):
    from ethlink import cli
    from click.testing import CliRunner
    wl = tmp_path / "wl.parquet"
    r = CliRunner().invoke(cli.main, ["workload", str(traced / "trace.arrow"), "-o", str(wl)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli.main, ["replay", str(wl), "--fabric", "incast-trim", "-o", str(tmp_path / "rep"),
                                      "--set", "switch.buffer=200KiB"])
    assert r.exit_code == 0, r.output
    a = json.loads((traced / "summary.json").read_text())
    b = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert a["uet"] == b["uet"] and a["fct_ps"] == b["fct_ps"] and a["uet"]["trimmed_packets"] > 0


# --- NSCC --------------------------------------------------------------------------------

def _jain(x):
    x = np.asarray(x, dtype=float)
    return x.sum() ** 2 / (len(x) * (x ** 2).sum())


def test_fairness_nscc_converges_to_fair_shares():
    """Four flows started 50 us apart: over the second half of the run their delivered
    bytes are fair (Jain's index), after NSCC cut the early flows' windows."""
    sim = Simulation(scenarios.load("fairness-nscc"), trace="endpoints")
    parts = []
    res = sim.run(trace_sink=parts.append)
    recs = np.concatenate(parts)
    s = res.summary
    d = recs[(recs["event"] == 5) & (recs["kind"] == 7)]
    first = d[d["time_ps"] < 200_000_000]                          # before the last flow's 150 us start + a bit
    second = d[d["time_ps"] >= s["sim_time_ps"] // 2]
    early = np.bincount(first["flow"], weights=first["payload"], minlength=4)
    late = np.bincount(second["flow"], weights=second["payload"], minlength=4)
    assert _jain(early) < 0.8                                      # the first flow had the port to itself
    assert _jain(late) >= 0.98
    n = s["uet"]["nscc"]
    assert n["decreases"] > 0 and n["cwnd_min_bytes"] < res.qps["nscc_maxwnd"].max()
    assert not s["drops"] and s["conservation"]["residual"] == 0
    q = res.qps_df()
    assert (q["nscc_decreases"] > 0).sum() >= 3                    # every flow but possibly the last cut


def test_nscc_cuts_trimming_and_reacts_to_nacks():
    """incast-trim with NSCC instead of a fixed window: NACKs of trimmed packets start quick
    adapt, so far fewer packets are trimmed; still no timeout, bytes conserved."""
    fixed = Simulation(scenarios.load("incast-trim")).run().summary
    nscc = Simulation(scenarios.load("incast-trim", ["uet.window=0", "uet.nscc.enabled=true"])).run().summary
    assert nscc["uet"]["nscc"]["quick_adapts"] > 0
    assert nscc["uet"]["trimmed_packets"] < fixed["uet"]["trimmed_packets"] / 5
    assert nscc["timeouts"] == 0 and nscc["flows_completed"] == nscc["flows_total"]
    assert nscc["conservation"]["retransmitted_bytes"] == nscc["uet"]["trimmed_bytes"]
    assert nscc["conservation"]["residual"] == 0


def test_nscc_parameters_follow_htsim_scaling():
    from ethlink.sim import nscc_params, network_rtt_ps
    sc = scenarios.load("fairness-nscc")
    p = nscc_params(sc)
    rtt = network_rtt_ps(sc)
    a = (rtt * 400e9 / 8e12) / (12e6 * 100e9 / 8e12)               # network BDP / (100 Gb/s x 12 us)
    b = 6e6 / 12e6                                                 # target 6 us / 12 us
    assert p["nscc_rtt_ps"] == rtt and p["nscc_target_ps"] == 6_000_000 and p["nscc_qa_ps"] == 24_000_000
    assert p["nscc_alpha"] == pytest.approx(4 * a * b * 4096 / 6e6)
    assert p["nscc_fi"] == pytest.approx(5 * a) and p["nscc_eta"] == pytest.approx(0.15 * 4096 * a)
    assert p["nscc_adjust_bytes"] == int(16000 * b) and p["nscc_gamma"] == 0.8
    over = nscc_params(scenarios.load("fairness-nscc", ["uet.nscc.fi=2.5", "uet.nscc.base_rtt=3us"]))
    assert over["nscc_fi"] == 2.5 and over["nscc_rtt_ps"] == 3_000_000


@pytest.mark.parametrize("bad, field", [
    ({"gamma": 2}, "uet.nscc.gamma"), ({"target_delay": 0}, "uet.nscc.target_delay"),
    ({"delay_alpha": 0}, "uet.nscc.delay_alpha"), ({"targt_delay": "6us"}, "uet.nscc.targt_delay"),
    ({"max_window": -1}, "uet.nscc.max_window"),
])
def test_bad_nscc_values_name_the_field(bad, field):
    d = {"topology": {"kind": "star", "hosts": 3}, "uet": {"nscc": bad},
         "workload": [{"kind": "incast", "size": 4096, "transport": "uet"}]}
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.")):
        Scenario.from_dict(d)


def test_nscc_and_a_fixed_window_exclude_each_other():
    d = {"topology": {"kind": "star", "hosts": 3}, "uet": {"window": "64KiB", "nscc": {"enabled": True}},
         "workload": [{"kind": "incast", "size": 4096, "transport": "uet"}]}
    with pytest.raises(ScenarioError, match=r"uet\.window"):
        Scenario.from_dict(d)


def test_trace_analysis_counts_uet_deliveries_once(traced):
    """ethlink.analysis replays UET acceptance from the trace (first untrimmed deliver of
    each PSN): finish times equal the engine's; completions come from flows.parquet."""
    import pyarrow.parquet as pq
    from ethlink import analysis
    engine = pq.read_table(traced / "flows.parquet")
    replayed = analysis.flows(traced / "trace.arrow", source="trace")
    assert replayed["finish_ps"].to_pylist() == engine["finish_ps"].to_pylist()
    assert replayed["delivered_bytes"].to_pylist() == engine["bytes"].to_pylist()
    auto = analysis.flows(traced / "trace.arrow")
    assert auto["complete_ps"].to_pylist() == engine["complete_ps"].to_pylist()


def test_uet_on_a_lossless_class_is_not_trimmed():
    """UET on a PFC priority: lossless, so nothing is dropped or trimmed and no timer fires."""
    d = {"topology": {"kind": "star", "hosts": 9}, "switch": {"buffer": "2MiB"}, "host": {"mtu": 4096},
         "pfc": {"priorities": [3]}, "uet": {"trim": True, "trim_prio": 6},
         "workload": [{"kind": "incast", "size": "512KiB", "senders": 8, "prio": 3, "transport": "uet"}]}
    s = Simulation(Scenario.from_dict(d)).run().summary
    assert s["pfc_pause_frames"] > 0 and not s["drops"]
    assert s["uet"]["trimmed_packets"] == 0 and s["timeouts"] == 0
    assert s["flows_completed"] == 8 and s["conservation"]["residual"] == 0


def test_a_uet_timer_below_the_queueing_delay_is_reported():
    sc = _incast(senders=8, size="512KiB", rto="2us")
    s = Simulation(sc).run().summary
    assert s["timeouts"] > 0 and not s["drops"] and s["spurious_retransmissions"] > 0
    assert any("raise uet.rto" in w for w in s["warnings"])
    assert not any("RoCE" in w for w in s["warnings"])
    assert s["conservation"]["residual"] == 0 and s["flows_completed"] == 8


def test_a_qp_gives_up_when_no_copy_of_a_frame_can_ever_get_through():
    """A queue threshold below one full frame (alpha 1/8 of an 18 KiB buffer): every data
    frame is trimmed, every copy again. uet.retry_limit retransmissions in a row without a
    newly acknowledged PSN put each QP in the error state, so the run ends."""
    d = {"topology": {"kind": "star", "hosts": 9}, "switch": {"buffer": 18432, "alpha": 0.125},
         "host": {"mtu": 4096}, "uet": {"trim": True, "rto": "20us", "retry_limit": 50},
         "workload": [{"kind": "incast", "size": "16KiB", "senders": 8, "prio": 1, "transport": "uet"}]}
    res = Simulation(Scenario.from_dict(d)).run()
    s = res.summary
    assert res.stop == "empty" and s["qp_errors"] == 8 and s["flows_completed"] == 0
    assert s["uet"]["acks"] == 0 and s["uet"]["selective_retransmissions"] == 8 * 50   # then the 51st is due
    assert s["conservation"]["residual"] == 0


@pytest.mark.parametrize("size", ["1", "4KiB", "1MiB"])
def test_a_lone_uet_message_finishes_at_its_ideal_time(size):
    """On an idle fabric a UET message's frames (PDS and SES headers on each) finish
    exactly when the ideal-FCT model says: slowdown 1 (RoCE frame sizes made it larger)."""
    sc = Scenario.from_dict({"topology": {"kind": "leaf-spine", "leaves": 2, "hosts_per_leaf": 2, "rate": "400G"},
                             "flow": [{"src": 0, "dst": 3, "size": size, "transport": "uet"}]})
    res = Simulation(sc).run()
    t = res.table("flows")
    assert t.column("finish_ps")[0].as_py() == t.column("ideal_fct_ps")[0].as_py()
    assert res.summary["slowdown"]["max"] == 1.0


@pytest.mark.parametrize("planes", [2, 4])
def test_uet_sprays_over_a_hosts_nic_ports_and_planes(planes):
    """A multi-plane host sprays a UET message's packets over its NIC ports (one per plane)
    in turn: equal bytes on every plane, the message `planes` times faster than with
    uet.spray off (one port), and each finishes exactly at its ideal time."""
    fin = {}
    for spray in (True, False):
        sc = Scenario.from_dict({"topology": {"kind": "multiplane-star", "hosts": 4, "planes": planes, "rate": "200G"},
                                 "uet": {"spray": spray},
                                 "flow": [{"src": 0, "dst": 1, "size": "1MiB", "transport": "uet"}]})
        res = Simulation(sc).run()
        t, ports = res.table("flows"), res.table("ports").to_pandas()
        fin[spray] = t.column("finish_ps")[0].as_py()
        assert fin[spray] == t.column("ideal_fct_ps")[0].as_py()
        h0 = ports[ports["node"] == "h0"]["tx_bytes"].to_numpy()
        used = h0[h0 > 10_000]                   # data, not the few ACK-free control bytes
        assert len(used) == (planes if spray else 1)
        assert used.max() - used.min() <= 4096 + 106
    assert fin[False] / fin[True] > 0.9 * planes


def test_queue_pairs_that_give_up_are_reported_with_the_fix():
    """1000 UET senders with fixed 64 KiB windows into a 1 MiB buffer: trimmed headers at
    the strict top priority take the receiver's link, nearly every QP reaches its retry
    limit, and the run says so (qp_errors, a warning naming the fix), not only by its
    incomplete flows."""
    s = Simulation(scenarios.load("incast-trim", ["topology.hosts=1001", "workload.0.senders=1000",
                                                  "workload.0.size=256KiB"])).run().summary
    assert s["qp_errors"] > 0 and s["flows_completed"] + s["qp_errors"] == s["flows_total"]
    assert any(w.startswith(f"{s['qp_errors']} queue pairs gave up") and "uet.nscc.enabled" in w
               for w in s["warnings"]), s["warnings"]
    assert s["conservation"]["residual"] == 0
