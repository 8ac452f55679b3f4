"""``companion.model.cli.main``: ``ouro project new / import / export / info``, exit status
2 with the field named for bad input, and nothing half-written."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from companion.model.cli import main
from companion.model.persist import ProjectDir


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_new_info_export(tmp_path, capsys):
    path = tmp_path / "song.ouro"
    code, out, _ = run(capsys, "project", "new", str(path), "--sample-rate", "44100",
                       "--bpm", "90", "--user", "alice")
    assert code == 0 and "44100 Hz" in out
    with ProjectDir.open(path, "alice") as pd:
        g = pd.project.add_track("meta", "G")
        t = pd.project.add_track("audio", "Drums", parent=g.id)
        t.add_clip("sha256:" + "12" * 32, 0.0, 2.5)  # two and a half 4/4 bars
        pd.project.add_track("bus", "Verb")
    code, out, _ = run(capsys, "info", str(path))
    assert code == 0
    assert "tracks:  3 (1 audio, 1 bus, 1 meta)" in out and "clips:   1" in out
    assert "3 bars, 6.667 s" in out  # 2.5 wn at 90 quarter notes a minute: 10 beats
    assert "90 bpm at 0" in out and "4/4 at 0" in out
    code, out, _ = run(capsys, "info", str(path), "--json")
    info = json.loads(out)
    assert (info["tracks"], info["clips"], info["length_bars"]) == (3, 1, 3)
    assert info["length_seconds"] == pytest.approx(2.5 * 240 / 90)
    out_json = tmp_path / "out" / "project.json"
    out_json.parent.mkdir()
    code, _, _ = run(capsys, "export", str(path), str(out_json))
    assert code == 0
    data = json.loads(out_json.read_text())
    assert data["format"] == "ouroboros-project" and data["sample_rate"] == 44100
    assert data["tracks"][0]["children"][0]["name"] == "Drums"


def test_info_and_export_work_while_the_project_is_open(tmp_path, capsys):
    path = tmp_path / "song.ouro"
    pd = ProjectDir.create(path, "alice")
    pd.project.add_track("audio", "Live")
    code, out, _ = run(capsys, "info", str(path))
    assert code == 0 and "tracks:  1" in out
    pd.close()


def test_import_a_project_json_with_file_sources_and_round_trip(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "loops").mkdir(parents=True)
    sf.write(src / "loops" / "a.wav", np.linspace(-1, 1, 960, dtype=np.float32), 48000)
    doc = {"format": "ouroboros-project", "version": 1, "sample_rate": 48000,
           "tempo": [{"at": 0.0, "bpm": 100.0, "ramp": False}],
           "meter": [{"at": 0.0, "num": 3, "den": 4}],
           "tracks": [{"id": "t1", "kind": "audio", "name": "A",
                       "clips": [{"id": "c1", "source": {"file": "loops/a.wav"},
                                  "start": 0.0, "length": 1.5, "loop": True}]}],
           "master": {"volume": 0.9, "effects": []}}
    (src / "project.json").write_text(json.dumps(doc))
    dest = tmp_path / "song.ouro"
    code, _, err = run(capsys, "import", str(src / "project.json"), str(dest))
    assert code == 0, err
    exported = tmp_path / "again.json"
    assert run(capsys, "export", str(dest), str(exported))[0] == 0
    data = json.loads(exported.read_text())
    ref = data["tracks"][0]["clips"][0]["source"]
    assert ref.startswith("sha256:") and list((dest / "audio").glob(ref[7:] + ".*"))
    assert data["meter"] == doc["meter"] and data["master"]["volume"] == 0.9
    # the exported file (sha256 sources, its pool next to it) imports again
    shutil.copy(exported, dest / "copy.json")
    code, _, err = run(capsys, "import", str(dest / "copy.json"), str(tmp_path / "b.ouro"))
    assert code == 0, err
    assert run(capsys, "export", str(tmp_path / "b.ouro"), str(tmp_path / "b.json"))[0] == 0
    assert json.loads((tmp_path / "b.json").read_text()) == data


@pytest.mark.parametrize("argv,field", [
    (["new", "{d}/x.ouro", "--sample-rate", "1234"], "--sample-rate"),
    (["new", "{d}/x.ouro", "--bpm", "0"], "--bpm"),
    (["new", "{d}/x.ouro", "--bpm", "fast"], "--bpm"),
    (["frobnicate"], "invalid choice"),
    (["info", "{d}/missing.ouro"], "not a project directory"),
    (["import", "{d}/nothing.json", "{d}/x.ouro"], "does not exist"),
    (["import", "{d}/bad.json", "{d}/x.ouro"], "length"),
    (["import", "{d}/notjson.json", "{d}/x.ouro"], "not valid JSON"),
])
def test_bad_input_exits_2_naming_the_field(tmp_path, capsys, argv, field):
    bad = {"format": "ouroboros-project", "version": 1,
           "tracks": [{"id": "t1", "kind": "audio", "name": "A",
                       "clips": [{"id": "c1", "source": "sha256:" + "0" * 64, "start": 0,
                                  "length": -1}]}]}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    (tmp_path / "notjson.json").write_text("{tracks: [")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _, err = run(capsys, *[a.format(d=tmp_path) for a in argv])
    assert code == 2
    assert field in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing half-written


def test_import_a_pedal_session(tmp_path, capsys):
    from rtcore.store import save_session
    from tests.rtcore.test_session import two_loops

    save_session(two_loops().engine, tmp_path / "session")
    code, out, err = run(capsys, "import", str(tmp_path / "session"),
                         str(tmp_path / "live.ouro"))
    assert code == 0, err
    assert "3 tracks, 2 clips" in out
    code, out, _ = run(capsys, "info", str(tmp_path / "live.ouro"))
    assert "4 bars, 8.000 s" in out


def test_export_over_an_unwritable_path_exits_2(tmp_path, capsys):
    path = tmp_path / "song.ouro"
    ProjectDir.create(path, "alice").close()
    code, _, err = run(capsys, "export", str(path), str(tmp_path / "no" / "dir" / "p.json"))
    assert code == 2 and "No such file" in err
    assert not (tmp_path / "no").exists()


# --------------------------------------------------------------------------- bounce

SR = 8000


def song(tmp_path, name: str = "song.ouro"):
    """A project directory: a metatrack (two audio tracks, effects), a MIDI track, a bus
    and a track with the same name as another."""
    path = tmp_path / name
    rng = np.random.default_rng(7)
    wav = tmp_path / "loop.wav"
    sf.write(wav, (rng.standard_normal((4000, 2)) * 0.3).astype(np.float32), SR,
             subtype="FLOAT")
    with ProjectDir.create(path, "alice", sample_rate=SR, bpm=100.0) as pd:
        with pd.pool() as pool:
            ref = pool.import_file(wav)
        p = pd.project
        g = p.add_track("meta", "Band", track_id="g")
        g.offset = 0.5
        g.add_effect("reverb", {"room_size": 0.4})
        gtr = p.add_track("audio", "Gtr", parent="g", track_id="gtr")
        gtr.add_clip(ref, 0.25, 1.0, fade_out=0.05)
        gtr.add_effect("chorus")
        gtr.volume = 0.6
        p.add_track("audio", "Bass", parent="g", track_id="bass").add_clip(ref, 0.0, 0.5)
        p.add_track("midi", "Keys", track_id="keys").add_midi_clip(
            0.0, 1.0, notes=[{"at": 0.25, "length": 0.25, "pitch": 57}])
        p.add_track("bus", "Verb", track_id="bus")
        p.add_track("audio", "Dup", track_id="d1")
        p.add_track("audio", "Dup", track_id="d2")
        fast = p.add_track("meta", "Fast", track_id="fast")
        fast.speed = 2.0
        p.add_track("audio", "Inside", parent="fast", track_id="inside").add_clip(ref, 0, 1)
    return path


def render_dir(path, out):
    from companion.engine.cli import render_file
    render_file(path, out)
    data, _ = sf.read(out, dtype="float32", always_2d=True)
    return data.T


def state(path):
    """What a refused command must leave as it was."""
    files = sorted(str(f.relative_to(path)) for f in path.rglob("*") if f.name != "lock")
    return files, (path / "project.json").read_text(), (path / "doc.log").read_bytes()


def test_bounce_freeze_unfreeze_flatten_end_to_end(tmp_path, capsys):
    path = song(tmp_path)
    original = json.loads((path / "project.json").read_text())
    mix = render_dir(path, tmp_path / "before.wav")
    code, out, err = run(capsys, "bounce", str(path), "Band", "--freeze", "--user", "bob")
    assert code == 0, err
    assert "track g 'Band': bounced" in out and "frozen" in out
    frozen = json.loads((path / "project.json").read_text())
    [g] = [t for t in frozen["tracks"] if t["id"] == "g"]
    assert g["kind"] == "audio" and g["frozen"]["track"] == original["tracks"][0]
    # what plays is the same, sample for sample (the effects included: see test_bounce)
    again = render_dir(path, tmp_path / "frozen.wav")
    assert np.array_equal(mix, again)
    code, out, err = run(capsys, "bounce", str(path), "g", "--freeze")
    assert code == 2 and "track g 'Band': is frozen already; unfreeze it first" in err
    code, out, err = run(capsys, "unfreeze", str(path), "Band")
    assert code == 0 and "unfrozen" in out, err
    assert json.loads((path / "project.json").read_text()) == original
    # a file only: the project is not touched
    before = state(path)
    code, out, err = run(capsys, "bounce", str(path), "keys", "--out", str(tmp_path / "k.wav"))
    assert code == 0, err
    assert state(path) == before
    from companion.engine.bounce import render_track
    from companion.engine.pool import Pool
    with Pool(path, SR) as pool:
        want = render_track(original, "keys", pool).data
    got, rate = sf.read(tmp_path / "k.wav", dtype="float32", always_2d=True)
    assert rate == SR and np.array_equal(got.T, want)
    code, out, err = run(capsys, "bounce", str(path), "gtr", "--flatten")
    assert code == 0 and "flattened" in out, err
    flat = json.loads((path / "project.json").read_text())
    [gtr] = flat["tracks"][0]["children"][:1]
    assert gtr["id"] == "gtr" and "frozen" not in gtr and gtr["effects"] == []
    assert np.array_equal(render_dir(path, tmp_path / "flat.wav"), mix)
    code, out, err = run(capsys, "bounce", str(path), "bass")
    assert code == 0 and "in the pool" in out, err
    ref = out.split("sha256:")[1][:64]
    assert list((path / "audio").glob(ref + ".*"))


@pytest.mark.parametrize("argv,message", [
    (["Nope", "--freeze"], "track 'Nope': no track has this ID or name"),
    (["Dup", "--freeze"], "track 'Dup': names 2 tracks (d1, d2); give its ID"),
    (["Verb", "--freeze"], "track bus 'Verb': is a bus"),
    (["Verb", "--out", "{d}/v.wav"], "is a bus"),
    (["d1", "--flatten"], "track d1 \"Dup\": has nothing to bounce"),
    (["Inside", "--freeze"], 'is inside metatrack fast "Fast" whose speed (2'),
    (["Gtr", "--out", "{d}/g.mp3"], "--out"),
    (["Gtr", "--freeze", "--flatten"], "not allowed with argument"),
    (["Gtr", "--block-size", "0"], "--block-size"),
])
def test_bad_bounce_input_exits_2_naming_the_track_and_writes_nothing(tmp_path, capsys, argv,
                                                                      message):
    path = song(tmp_path)
    before = state(path)
    outside = sorted(f.name for f in tmp_path.iterdir())
    code, _, err = run(capsys, "bounce", str(path), *[a.format(d=tmp_path) for a in argv])
    assert code == 2
    assert message in err, err
    assert state(path) == before
    assert sorted(f.name for f in tmp_path.iterdir()) == outside


def test_unfreeze_bad_input_exits_2(tmp_path, capsys):
    path = song(tmp_path)
    code, _, err = run(capsys, "unfreeze", str(path), "Gtr")
    assert code == 2 and "track gtr: is not frozen" in err
    code, _, err = run(capsys, "unfreeze", str(path), "Nope")
    assert code == 2 and "track 'Nope'" in err


def test_a_long_bounce_shows_progress_on_a_terminal(tmp_path, capsys, monkeypatch):
    from companion.model import cli
    path = song(tmp_path)
    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True)
    monkeypatch.setattr(cli._Progress, "__init__", lambda self, rate, label: (
        setattr(self, "on", True), setattr(self, "min_frames", 0),
        setattr(self, "label", label), setattr(self, "last", -1.0))[0])
    code, _, err = run(capsys, "bounce", str(path), "Gtr", "--freeze", "--block-size", "64")
    assert code == 0
    assert "bouncing Gtr [" in err and "100.0%" in err


def test_a_midi_file_becomes_a_project_and_goes_back_out(tmp_path, capsys):
    """A Standard MIDI File: its tempo, one MIDI track per part on the General MIDI
    SoundFont (drums on the drum bank), rendered; and the MIDI tracks exported again."""
    import mido

    from companion.engine.render import render_range

    mid = mido.MidiFile(ticks_per_beat=480)
    piano, drums = mido.MidiTrack(), mido.MidiTrack()
    mid.tracks += [piano, drums]
    piano.append(mido.MetaMessage("track_name", name="Piano", time=0))
    piano.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100), time=0))
    piano.append(mido.Message("program_change", program=4, time=0))
    for note in (60, 64, 67):
        piano.append(mido.Message("note_on", note=note, velocity=90, time=0))
        piano.append(mido.Message("note_off", note=note, velocity=0, time=480))
    drums.append(mido.Message("note_on", channel=9, note=36, velocity=100, time=0))
    drums.append(mido.Message("note_off", channel=9, note=36, time=240))
    src = tmp_path / "song.mid"
    mid.save(src)
    dest = tmp_path / "song.ouro"
    code, out, _ = run(capsys, "import", str(src), str(dest))
    assert code == 0 and "imported 2 tracks, 2 clips" in out, out
    with ProjectDir.open(dest, "me") as pd:
        data = pd.project.to_interchange()
        with pd.pool() as pool:
            audio = render_range(data, pool, 0, 48000 * 2, 4096)
    assert data["tempo"][0]["bpm"] == 100.0
    piano_t, drums_t = data["tracks"]
    assert piano_t["name"] == "Piano" and piano_t["instrument"]["program"] == 4
    assert piano_t["instrument"]["kind"] == "soundfont"
    assert drums_t["instrument"]["bank"] == 128
    assert [n["pitch"] for n in piano_t["clips"][0]["notes"]] == [60, 64, 67]
    assert np.abs(audio).max() > 0.01  # the SoundFont sounds
    back = tmp_path / "back.mid"
    code, out, _ = run(capsys, "export", str(dest), str(back))
    assert code == 0 and "2 MIDI tracks written" in out
    notes = [m.note for m in mido.MidiFile(back).tracks[1] if m.type == "note_on"]
    assert notes == [60, 64, 67]
    # a project without MIDI tracks has nothing to write
    empty = tmp_path / "empty.ouro"
    run(capsys, "new", str(empty))
    code, _, err = run(capsys, "export", str(empty), str(tmp_path / "none.mid"))
    assert code == 2 and "has no MIDI tracks to export" in err
    assert not (tmp_path / "none.mid").exists()
