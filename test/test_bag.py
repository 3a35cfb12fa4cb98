"""road-seg-bag: round trips for sqlite3 and mcap, compressed images, CamVid bags, topic errors."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from road_seg_perception.bagio import bag as B
from road_seg_perception.tools import bag as bag_cli

START_NS = 1_700_000_000_123_456_789


def synthetic_frames(n: int = 4, h: int = 24, w: int = 40, seed: int = 0) -> list[B.Frame]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        gt = rng.choice(np.array([0, 128, 255], np.uint8), size=(h, w))
        frames.append(B.Frame(rgb, gt))
    return frames


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip_identical(tmp_path, storage):
    frames = synthetic_frames()
    out = tmp_path / "bag"
    s = B.write_frames(out, frames, rate=10.0, storage=storage, frame_id="cam_front", start_ns=START_NS)
    assert s.frames == 4
    assert s.stamps_ns == [START_NS + i * 100_000_000 for i in range(4)]

    suffix = ".db3" if storage == "sqlite3" else ".mcap"
    assert (out / f"bag{suffix}").is_file()
    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == storage
    assert meta["version"] == B.METADATA_VERSION
    assert meta["message_count"] == 12
    assert meta["starting_time"]["nanoseconds_since_epoch"] == START_NS
    assert meta["duration"]["nanoseconds"] == 300_000_000
    assert meta["custom_data"] == {"created_by": "road_seg_perception"}
    by_topic = {t["topic_metadata"]["name"]: t for t in meta["topics_with_message_count"]}
    assert set(by_topic) == {B.IMAGE_TOPIC, B.CAMERA_INFO_TOPIC, B.GT_TOPIC}
    assert by_topic[B.IMAGE_TOPIC]["message_count"] == 4
    assert by_topic[B.IMAGE_TOPIC]["topic_metadata"]["type"] == "sensor_msgs/msg/Image"
    assert "reliability: 1" in by_topic[B.IMAGE_TOPIC]["topic_metadata"]["offered_qos_profiles"]

    back = B.read_frames(out)
    assert len(back) == 4
    for f, r, stamp in zip(frames, back, s.stamps_ns, strict=True):
        assert r.stamp_ns == stamp and r.timestamp_ns == stamp
        assert r.frame_id == "cam_front"
        np.testing.assert_array_equal(r.rgb, f.rgb)
        np.testing.assert_array_equal(r.gt, f.gt)

    infos = B.read_camera_infos(out)
    assert [B.stamp_ns_of(i) for i in infos] == s.stamps_ns
    assert {(i.width, i.height, i.header.frame_id, i.distortion_model) for i in infos} == {
        (40, 24, "cam_front", "plumb_bob")}
    assert all(not np.any(i.k) for i in infos)  # uncalibrated: zeroed intrinsics

    topics = B.read_bag_topics(out)
    assert {n: (t.msgtype, t.count) for n, t in topics.items()} == {
        B.IMAGE_TOPIC: ("sensor_msgs/msg/Image", 4), B.CAMERA_INFO_TOPIC: ("sensor_msgs/msg/CameraInfo", 4),
        B.GT_TOPIC: ("sensor_msgs/msg/Image", 4)}


def test_bytes_deserialise_with_rclpy(tmp_path):
    """What rosbags wrote is what a ROS 2 node receives (rclpy deserialisation)."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import Image

    frames = synthetic_frames(2)
    B.write_frames(tmp_path / "bag", frames, rate=5.0, start_ns=START_NS)
    with Reader(tmp_path / "bag") as r:
        conns = [c for c in r.connections if c.topic == B.IMAGE_TOPIC]
        msgs = [deserialize_message(raw, Image) for _, _, raw in r.messages(connections=conns)]
    assert [(m.header.stamp.sec, m.header.stamp.nanosec) for m in msgs] == [(1_700_000_000, 123_456_789),
                                                                           (1_700_000_000, 323_456_789)]
    assert msgs[0].encoding == "rgb8" and msgs[0].step == 40 * 3
    np.testing.assert_array_equal(np.frombuffer(bytes(msgs[1].data), np.uint8).reshape(24, 40, 3), frames[1].rgb)


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_compressed_round_trip(tmp_path, storage):
    # smooth images: jpeg keeps them close (random noise would not be a fair test of the codec)
    yy, xx = np.mgrid[0:48, 0:64]
    frames = [B.Frame(np.stack([(xx * 4 + k * 10) % 256, yy * 5, np.full_like(xx, 90 + k)], -1).astype(np.uint8))
              for k in range(3)]
    out = tmp_path / "bag"
    s = B.write_frames(out, frames, rate=15.0, compressed=True, storage=storage, start_ns=START_NS)
    topics = B.read_bag_topics(out)
    assert topics[B.COMPRESSED_TOPIC].msgtype == "sensor_msgs/msg/CompressedImage"
    assert B.IMAGE_TOPIC not in topics and B.GT_TOPIC not in topics
    msgs = [m.msg for m in B.iter_messages(out, [B.COMPRESSED_TOPIC])]
    assert {m.format for m in msgs} == {"rgb8; jpeg compressed bgr8"}
    back = B.read_frames(out)  # picks the compressed topic by default
    assert [r.stamp_ns for r in back] == s.stamps_ns
    for f, r in zip(frames, back, strict=True):
        assert r.rgb.shape == f.rgb.shape and r.gt is None
        assert np.abs(r.rgb.astype(int) - f.rgb.astype(int)).mean() < 3.0


def test_make_bag_from_camvid(camvid, tmp_path):
    from road_seg_perception.core.metrics import gt_image_from_label
    from road_seg_perception.training.datasets import LabelSpec, read_image, read_label

    out = tmp_path / "camvid_bag"
    rc = bag_cli.main(["make", "--images", str(camvid / "val"), "--masks", str(camvid / "valannot"), "--out", str(out),
                 "--limit", "3", "--storage", "mcap", "--frame-id", "camvid", "--start", "1000", "--rate", "15"])
    assert rc == 0
    names = sorted(p.name for p in (camvid / "val").iterdir())[:3]
    back = B.read_frames(out)
    assert [r.stamp_ns for r in back] == [1000 * 10**9 + round(i * 1e9 / 15) for i in range(3)]
    for name, r in zip(names, back, strict=True):
        assert r.frame_id == "camvid"
        np.testing.assert_array_equal(r.rgb, read_image(camvid / "val" / name))
        expected = gt_image_from_label(read_label(camvid / "valannot" / name, LabelSpec()))
        np.testing.assert_array_equal(r.gt, expected)
        assert set(np.unique(r.gt)) <= {0, 128, 255} and (r.gt == 255).any()


def test_info_cli_lists_topics(tmp_path, capsys):
    B.write_frames(tmp_path / "bag", synthetic_frames(2), start_ns=START_NS)
    assert bag_cli.main(["info", str(tmp_path / "bag")]) == 0
    out = capsys.readouterr().out
    assert "/camera/image_raw" in out and "sensor_msgs/msg/Image  (2 msgs)" in out and "messages: 6" in out


def test_missing_and_misnamed_topics_list_the_bag_topics(tmp_path, capsys):
    """A missing or misnamed topic fails with a message listing the bag's topics."""
    from road_seg_perception.tools import evaluate as E

    out = tmp_path / "bag"
    B.write_frames(out, [B.Frame(f.rgb) for f in synthetic_frames(2)], start_ns=START_NS)  # no ground truth
    with pytest.raises(B.BagError) as e:
        B.read_frames(out, image_topic="/camera/image_rect")
    msg = str(e.value)
    assert "'/camera/image_rect'" in msg and "/camera/image_raw" in msg and "/camera/camera_info" in msg

    # the evaluator's CLI: exit status 2 and the listing on stderr, for a misnamed image topic...
    rc = E.main([str(out), "--report", str(tmp_path / "r1"), "--image-topic", "/cam/image", "--model", "x.onnx"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "no image topic '/cam/image'" in err and "--image-topic" in err
    assert "/camera/image_raw" in err and "sensor_msgs/msg/CameraInfo" in err
    # ...for the missing ground truth...
    rc = E.main([str(out), "--report", str(tmp_path / "r2"), "--model", "x.onnx"])
    err = capsys.readouterr().err
    assert rc == 2 and "no ground-truth topic '/road_seg/ground_truth'" in err and "/camera/camera_info" in err
    # ...and for a topic of the wrong type
    rc = E.main([str(out), "--report", str(tmp_path / "r3"), "--image-topic", "/camera/camera_info",
                 "--model", "x.onnx"])
    err = capsys.readouterr().err
    assert rc == 2 and "has type sensor_msgs/msg/CameraInfo" in err
    assert not (tmp_path / "r1").exists()  # nothing written for a refused run


def test_bad_inputs_are_refused_clearly(tmp_path):
    with pytest.raises(B.BagError, match="does not exist"):
        bag_cli.make_bag(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "imgs").mkdir()
    with pytest.raises(B.BagError, match="no images"):
        bag_cli.make_bag(tmp_path / "imgs", tmp_path / "out")
    B.write_frames(tmp_path / "exists", synthetic_frames(1))
    with pytest.raises(B.BagError, match="exists already"):
        B.write_frames(tmp_path / "exists", synthetic_frames(1))
    with pytest.raises(B.BagError, match="does not exist"):
        B.read_bag_topics(tmp_path / "missing_bag")
    (tmp_path / "notabag").mkdir()
    with pytest.raises(B.BagError, match="cannot open bag"):
        B.read_bag_topics(tmp_path / "notabag")
    # a frame whose ground truth does not fit: error, and no half-written bag left behind
    bad = synthetic_frames(2)
    bad[1] = B.Frame(bad[1].rgb, bad[1].gt[:10])
    with pytest.raises(B.BagError, match="frame 1: ground truth"):
        B.write_frames(tmp_path / "partial", bad)
    assert not (tmp_path / "partial").exists()
    assert bag_cli.main(["make", "--images", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
