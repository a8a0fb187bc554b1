"""The report's Predictions section (a picture per protocol and data set from the records' samples
files, a note for a missing or changed file) and depth's metres and ratios in tables and bars."""

import re

import numpy as np
import pytest

from results import figures, report
from results.published import DEPTH_PROTOCOL
from results.record import Task, read_records, write_record
from results.samples import load_samples
from results.tables import build_tables
from tests.results.fixed import R50, SEGMENTATION, fixed_records, record
from transfer.samples import save_samples

DEPTH = Task("depth", "nyu-v2", "test", DEPTH_PROTOCOL)
ADE = Task("segmentation", "ade20k", "val", "ade20k-semfpn-80k/1")
DEPTH_METRICS = {"delta1": 80.5, "delta2": 95.0, "delta3": 98.75, "rms": 0.612, "rel": 0.138}


def write_depth(path, scale=1.0):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 6, 8, 3), dtype=np.uint8)
    truth = (scale * rng.uniform(1, 5, (2, 6, 8))).astype(np.float32)
    truth[:, :2] = 0.0  # no measurement
    prediction = (scale * rng.uniform(0.5, 6, (2, 6, 8))).astype(np.float32)
    return save_samples(path, images, truth, prediction, "depth")


def write_segmentation(path, count=3):
    labels = np.arange(count * 6 * 8).reshape(count, 6, 8) % 21
    labels[:, 0] = 255  # ignored
    images = np.zeros((count, 6, 8, 3), np.uint8)
    return save_samples(path, images, labels, (labels + 1) % 21, "segmentation")


@pytest.fixture
def records_dir(tmp_path):
    """Fixed records plus: two depth records with samples (the later one counts), a VOC
    segmentation record with samples, an ADE20K one whose file was changed afterwards, and one
    of another protocol whose file is gone."""
    records = tmp_path / "records"
    old = write_depth(tmp_path / "old" / "samples.npz", scale=2.0)
    new = write_depth(tmp_path / "new" / "samples.npz")
    voc = write_segmentation(tmp_path / "voc" / "samples.npz")
    ade = write_segmentation(tmp_path / "ade" / "samples.npz", count=1)
    write_segmentation(tmp_path / "ade" / "samples.npz", count=2)  # replaced: sha256 differs
    gone = {"file": str(tmp_path / "gone" / "samples.npz"), "sha256": "0" * 64}
    seg_gone = Task("segmentation", "voc2012", "val", "frozen-linear-seg/1")
    extra = [
        record("16:00:00", R50, DEPTH, DEPTH_METRICS, selection={"samples": old}),
        record("16:10:00", R50, DEPTH, DEPTH_METRICS, selection={"samples": new}),
        record("16:20:00", R50, SEGMENTATION, {"miou": 70.0}, selection={"samples": voc}),
        record("16:30:00", R50, ADE, {"miou": 40.0}, selection={"samples": ade}),
        record("16:40:00", R50, seg_gone, {"miou": 60.0}, selection={"samples": gone}),
    ]
    for item in [*fixed_records(), *extra]:
        write_record(records, item)
    return records


def predictions_section(text: str) -> str:
    return text.split("<h2>Predictions", 1)[1].split("<h2>", 1)[0]


def test_a_picture_per_protocol_and_data_set_and_a_note_per_bad_file(records_dir, tmp_path):
    out = tmp_path / "report.html"
    report.main(["--records", str(records_dir), "--out", str(out)])
    section = predictions_section(out.read_text(encoding="utf-8"))
    alts = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,', section)
    assert len(alts) == section.count("<img") == 2  # depth (latest record only) and VOC
    assert alts[0] == (
        "byol-paper-depth/1 on nyu-v2 (test), checkpoint byol-r50-1000ep: the first 2 test "
        "images, each as input, true depth and predicted depth side by side; depth in magma "
        "colours (grey: no measurement)"
    )
    assert alts[1].startswith("byol-paper-fcn/1 on voc2012 (val), checkpoint byol-r50-1000ep: ")
    assert "the first 3 test images" in alts[1] and "VOC colour map" in alts[1]
    notes = re.findall(r"<p class='note'>([^<]*)</p>", section)
    assert len(notes) == 2
    assert notes[0].startswith("Predictions of ade20k-semfpn-80k/1 on ade20k (val), checkpoint ")
    assert "has changed since its record was written (sha256 differs)" in notes[0]
    assert "frozen-linear-seg/1 on voc2012" in notes[1] and "samples.npz is missing" in notes[1]


def test_without_samples_the_section_says_so(tmp_path):
    records = tmp_path / "records"
    for item in fixed_records():
        write_record(records, item)
    text = report.build_report(read_records(records), None, "t")
    assert "No record names sample predictions" in predictions_section(text)


def test_depth_rows_share_one_range_and_grey_marks_no_measurement(tmp_path):
    samples = load_samples(write_depth(tmp_path / "samples.npz")["file"])
    figure = figures.samples_figure(samples, "depth")
    axes = [axis for axis in figure.axes if axis.images]  # 2 rows x 3, colour bars aside
    assert len(axes) == 6
    for row in range(2):
        truth, prediction = axes[3 * row + 1].images[0], axes[3 * row + 2].images[0]
        assert truth.get_clim() == prediction.get_clim()
        valid = np.concatenate(
            [samples["truth"][row][samples["truth"][row] > 0], samples["prediction"][row].ravel()]
        )
        assert truth.get_clim() == pytest.approx((valid.min(), valid.max()))
        assert truth.get_array().mask[:2].all() and not truth.get_array().mask[2:].any()
        assert truth.get_cmap().get_bad().tolist() == pytest.approx([0.6, 0.6, 0.6, 1.0])


def test_segmentation_colours_are_the_voc_palette_with_white_ignore(tmp_path):
    palette = figures.voc_palette()
    # VOCdevkit's colour map: background black, aeroplane, bicycle, ..., person (15)
    assert palette[:3].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert palette[15].tolist() == [192, 128, 128] and palette[255].tolist() == [255, 255, 255]
    samples = load_samples(write_segmentation(tmp_path / "samples.npz", count=1)["file"])
    figure = figures.samples_figure(samples, "voc")
    shown = figure.axes[1].images[0].get_array()  # the truth, as RGB
    assert np.array_equal(shown, palette[samples["truth"][0]])
    assert (shown[0] == 255).all()  # the ignored row is white


def test_depth_errors_stay_in_the_table_and_out_of_the_percent_bars(records_dir):
    tables = {table.id: table for table in build_tables(read_records(records_dir))}
    dense = tables["dense"]
    assert figures.percent_headers(dense) == [
        header for header in dense.headers if "rms" not in header and "rel" not in header
    ]
    assert len(figures.percent_headers(dense)) == len(dense.headers) - 2
    _, alt = figures.bar_figure(dense)
    assert alt.startswith("bar chart of dense (") and "rms ↓" in alt and "rel ↓" in alt
    text = report.build_report(read_records(records_dir), None, "t")
    table = text.split("id='dense'", 1)[1].split("</table>", 1)[0]
    assert "0.612 (+0.071)" in table and "0.541" in table  # rms in metres, three decimals
    assert "80.5" in table
