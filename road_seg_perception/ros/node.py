"""``road_seg_node``: camera frames in, road masks, overlays and diagnostics out.

ROS plumbing only. Segmentation is :class:`~road_seg_perception.segmenter.RoadSegmenter`, frame
sampling and accounting are :mod:`road_seg_perception.sampling`, overlays are
:mod:`road_seg_perception.overlay` and message conversion is :mod:`.conversions`.

The processing is :class:`RoadSegmentation`, used by this plain node and by the managed
``road_seg_lifecycle_node`` (:mod:`.lifecycle_node`); running either as a process (signals, clean
shutdown) is :mod:`.node_process`.

Topics (relative, remappable): ``image`` (Image) or ``image/compressed`` (CompressedImage) and
``camera_info`` in; ``road_mask``, ``road_overlay``, ``road_probability``, ``road_camera_info``,
``road_grid`` (``nav_msgs/OccupancyGrid``, :mod:`road_seg_perception.core.ground_grid`),
``road_boundary`` (``geometry_msgs/PolygonStamped``, :mod:`road_seg_perception.core.road_boundary`) and
``/diagnostics`` out.
"""

from __future__ import annotations

import math
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PolygonStamped
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from rclpy.subscription import Subscription
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from road_seg_perception.bagio.image_codec import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    ImageConversionError,
    compressed_header,
    compressed_source_encoding,
    compressed_to_rgb,
    image_to_rgb,
    probability_image,
    rgb_to_encoding,
    validate_image_msg,
)
from road_seg_perception.core.backends import BACKENDS, DEVICES, SPINNING_MODES, onnx_gpu_available, precheck_model
from road_seg_perception.core.ground_grid import CameraPose, GridConfigError, GridSpec, GroundGridCache, Intrinsics
from road_seg_perception.core.model_io import ModelFileError
from road_seg_perception.core.overlay import draw_overlay
from road_seg_perception.core.road_boundary import road_boundary
from road_seg_perception.core.sampling import FrameSampler, FrameScheduler, LatencyTracker, RateMeter, stale_status
from road_seg_perception.core.segmenter import PostConfig, RoadSegmenter, default_model_path
from road_seg_perception.core.temporal import DEFAULT_ALPHA, DEFAULT_RESET_GAP_S, DEFAULT_SMOOTHING, ProbabilityEMA
from road_seg_perception.ros.grid import (
    TfPoseSource,
    intrinsics_from_camera_info,
    occupancy_grid_msg,
    polygon_msg,
    tf_available,
)
from road_seg_perception.ros.intake import NoExecutorGroup, SubscriptionIntake, intake_available
from road_seg_perception.ros.messages import numpy_to_image_msg
from road_seg_perception.ros.model_loader import (
    LoadRequest,
    ModelLoader,
    load_until_shutdown,
    model_files_identity,
    unknown_overrides,
)
from road_seg_perception.ros.node_process import run_node, stop_requested

NODE_NAME = "road_seg_node"
PROBABILITY_ENCODINGS = ("mono8", "32FC1")
GRID_POSE_SOURCES = ("parameters", "tf")
BAD_INPUT_LOG_PERIOD_S = 5.0
#: How often the node checks whether the camera has gone stale (WARN is published as soon as it has).
STALE_CHECK_PERIOD_S = 0.1
#: History depth of the reliable output publishers.
OUTPUT_DEPTH = 5
#: Parameters whose change loads a new model (fully, on the loader thread, before it replaces the old one).
MODEL_PARAMETERS = ("model_path", "backend", "device", "allow_unsafe_model", "inference_threads",
                    "inference_spinning", "model_reload")


@dataclass(frozen=True)
class ParamSpec:
    """A node parameter: default, description and range for its ``ParameterDescriptor``."""

    default: Any
    description: str
    read_only: bool = False
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    constraints: str = ""

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(description=self.description, read_only=self.read_only,
                                additional_constraints=self.constraints)
        if self.int_range:
            d.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=1)]
        if self.float_range:
            d.floating_point_range = [FloatingPointRange(from_value=self.float_range[0],
                                                         to_value=self.float_range[1], step=0.0)]
        return d


_BIG = 2**31 - 1
#: Every parameter the node declares (``config/road_seg.yaml`` lists the same names and defaults).
PARAMETERS: dict[str, ParamSpec] = {
    "model_path": ParamSpec("", "Model file (.onnx or .keras); empty = the shipped "
                                "share/road_seg_perception/models/road_unet_camvid_int8.onnx (INT8) on a CPU, "
                                "its float road_unet_camvid.onnx for Keras or when ONNX Runtime has a GPU. Setting "
                                "the same path again reloads it only if the file changed (device, inode, size, mtime)"),
    "model_reload": ParamSpec(0, "Change this number (e.g. add 1) to reload model_path even if the file looks "
                                 "unchanged", int_range=(-_BIG, _BIG)),
    "backend": ParamSpec("auto", "Inference backend; auto runs an .onnx file with ONNX Runtime and a .keras file "
                                 "with Keras, or with its .onnx export when that carries the .keras weights hash",
                         constraints="one of: " + ", ".join(BACKENDS)),
    "device": ParamSpec("auto", "Inference device; gpu falls back to cpu (logged) when no GPU is usable",
                        constraints="one of: " + ", ".join(DEVICES)),
    "allow_unsafe_model": ParamSpec(False, "Allow .keras models with Lambda layers or custom code. "
                                           "Only for files you trust: they can run arbitrary code"),
    "inference_threads": ParamSpec(0, "ONNX Runtime intra-op threads (0 = min(4, CPU cores))", int_range=(0, 256)),
    "inference_spinning": ParamSpec("off", "ONNX Runtime worker threads: off (sleep when idle), run (spin-wait "
                                           "during an inference only) or always (also between frames: "
                                           "lowest latency, burns CPU)",
                                    constraints="one of: " + ", ".join(SPINNING_MODES)),
    "flip_average": ParamSpec(False, "Average each frame's road probability with that of its left-right mirror "
                                     "image (mirrored back): one batch of two, twice the inference work"),
    "threshold": ParamSpec(0.5, "Road probability threshold", float_range=(0.0, 1.0),
                           constraints="strictly between 0 and 1"),
    "min_blob_area": ParamSpec(0, "Remove road blobs smaller than this many pixels (0 = off)", int_range=(0, _BIG)),
    "fill_holes_area": ParamSpec(0, "Fill non-road holes inside the road up to this many pixels (0 = off)",
                                 int_range=(0, _BIG)),
    "process_every_n": ParamSpec(1, "Process every n-th received frame", int_range=(1, 10_000)),
    "max_rate_hz": ParamSpec(0.0, "Process at most this many frames per second (0 = unlimited)",
                             float_range=(0.0, 1000.0)),
    "overlay_color": ParamSpec([0, 255, 0], "Overlay tint [r, g, b], each 0-255",
                               constraints="three integers in [0, 255]"),
    "overlay_alpha": ParamSpec(0.45, "Overlay tint opacity", float_range=(0.0, 1.0)),
    "publish_overlay": ParamSpec(True, "Publish road_overlay (computed only while someone subscribes)"),
    "publish_probability": ParamSpec(False, "Publish road_probability (computed only while someone subscribes)"),
    "probability_encoding": ParamSpec("mono8", "road_probability encoding: mono8 (0-255) or 32FC1 (0.0-1.0)",
                                      constraints="mono8 or 32FC1"),
    "use_compressed": ParamSpec(False, "Subscribe to image/compressed (sensor_msgs/CompressedImage, jpeg or "
                                       "png) instead of image (sensor_msgs/Image)", read_only=True),
    "publish_camera_info": ParamSpec(False, "Republish camera_info on road_camera_info with each processed "
                                            "frame's header, for rviz", read_only=True),
    "intake_thread": ParamSpec(True, "Take camera frames on a thread of their own instead of the executor "
                                     "(lower latency); false: the executor delivers them", read_only=True),
    "stale_timeout_s": ParamSpec(2.0, "Diagnostics go to WARN when no image arrived for this long",
                                 float_range=(0.01, 3600.0)),
    "max_image_pixels": ParamSpec(DEFAULT_MAX_PIXELS, "Drop images with more pixels than this (width * height)",
                                  int_range=(1, _BIG)),
    "max_message_bytes": ParamSpec(DEFAULT_MAX_BYTES, "Drop messages whose data is larger than this many bytes",
                                   int_range=(1, _BIG)),
    "temporal_smoothing": ParamSpec(DEFAULT_SMOOTHING, "Average the road probability over processed frames "
                                                       "(exponential moving average) before thresholding: "
                                                       "steadier masks, a little lag"),
    "temporal_alpha": ParamSpec(DEFAULT_ALPHA, "Weight of the newest frame in the moving average (1 = no smoothing)",
                                float_range=(0.0, 1.0), constraints="in (0, 1]"),
    "temporal_reset_gap_s": ParamSpec(DEFAULT_RESET_GAP_S, "Restart the moving average when frames are further "
                                                           "apart than this (header stamps), go back in time or "
                                                           "change size", float_range=(0.001, 3600.0)),
    "publish_grid": ParamSpec(False, "Publish road_grid (nav_msgs/OccupancyGrid: the road mask on the flat ground "
                                     "plane; needs camera_info) and road_boundary (geometry_msgs/PolygonStamped: "
                                     "the outline of the robot's road in it), each computed only while someone "
                                     "subscribes",
                              read_only=True),
    "grid_frame": ParamSpec("base_footprint", "Frame of road_grid: ground plane z = 0, x forward, y left; the "
                                              "camera pose parameters are in it"),
    "grid_pose_source": ParamSpec("parameters", "Camera pose for road_grid: parameters (camera_*) or tf (grid_frame "
                                                "<- the image's frame_id; needs tf2_ros)",
                                  read_only=True, constraints="one of: " + ", ".join(GRID_POSE_SOURCES)),
    "camera_height_m": ParamSpec(1.5, "Camera height above the ground (m)", float_range=(0.01, 100.0)),
    "camera_x_m": ParamSpec(0.0, "Camera position along grid_frame x (m)", float_range=(-1000.0, 1000.0)),
    "camera_y_m": ParamSpec(0.0, "Camera position along grid_frame y (m)", float_range=(-1000.0, 1000.0)),
    "camera_roll_rad": ParamSpec(0.0, "Camera roll (rad; positive turns its right side down)",
                                 float_range=(-math.pi, math.pi)),
    "camera_pitch_rad": ParamSpec(0.0, "Camera pitch (rad; positive looks down)", float_range=(-math.pi, math.pi)),
    "camera_yaw_rad": ParamSpec(0.0, "Camera yaw (rad; positive looks left)", float_range=(-math.pi, math.pi)),
    "grid_resolution_m": ParamSpec(0.1, "road_grid cell size (m)", float_range=(0.001, 100.0)),
    "grid_forward_m": ParamSpec(20.0, "road_grid extent along x, from grid_frame's origin forward (m)",
                                float_range=(0.001, 10000.0)),
    "grid_lateral_m": ParamSpec(10.0, "road_grid extent along y, centred on grid_frame's origin (m)",
                                float_range=(0.001, 10000.0)),
    "grid_max_range_m": ParamSpec(20.0, "Cells farther than this from the camera's foot point are unseen (-1)",
                                  float_range=(0.001, 10000.0)),
}


def _model_key(cfg: Any) -> tuple:
    return tuple(getattr(cfg, k) for k in MODEL_PARAMETERS)


class ConfigError(ValueError):
    """An invalid parameter value; the message names the parameter."""


@dataclass(frozen=True)
class NodeConfig:
    """The validated, typed parameter values. Replaced as a whole, so the worker sees one version."""

    model_path: str
    model_reload: int
    backend: str
    device: str
    allow_unsafe_model: bool
    inference_threads: int
    inference_spinning: str
    flip_average: bool
    threshold: float
    min_blob_area: int
    fill_holes_area: int
    process_every_n: int
    max_rate_hz: float
    overlay_color: tuple[int, int, int]
    overlay_alpha: float
    publish_overlay: bool
    publish_probability: bool
    probability_encoding: str
    use_compressed: bool
    publish_camera_info: bool
    intake_thread: bool
    stale_timeout_s: float
    max_image_pixels: int
    max_message_bytes: int
    temporal_smoothing: bool
    temporal_alpha: float
    temporal_reset_gap_s: float
    publish_grid: bool
    grid_frame: str
    grid_pose_source: str
    camera_height_m: float
    camera_x_m: float
    camera_y_m: float
    camera_roll_rad: float
    camera_pitch_rad: float
    camera_yaw_rad: float
    grid_resolution_m: float
    grid_forward_m: float
    grid_lateral_m: float
    grid_max_range_m: float

    @classmethod
    def from_values(cls, v: dict[str, Any]) -> NodeConfig:
        """Validate parameter values; raise :class:`ConfigError` naming the first bad one."""
        def check(ok: bool, name: str, why: str) -> None:
            if not ok:
                raise ConfigError(f"parameter {name}={v[name]!r} is invalid: {why}")

        check(v["backend"] in BACKENDS, "backend", f"must be one of {', '.join(BACKENDS)}")
        check(v["device"] in DEVICES, "device", f"must be one of {', '.join(DEVICES)}")
        check(v["inference_threads"] >= 0, "inference_threads", "must be >= 0 (0 = automatic)")
        check(v["inference_spinning"] in SPINNING_MODES, "inference_spinning",
              f"must be one of {', '.join(SPINNING_MODES)}")
        check(0.0 < v["threshold"] < 1.0, "threshold", "must be strictly between 0 and 1")
        check(v["min_blob_area"] >= 0, "min_blob_area", "must be >= 0")
        check(v["fill_holes_area"] >= 0, "fill_holes_area", "must be >= 0")
        try:
            FrameSampler.validate(v["process_every_n"], v["max_rate_hz"])
        except ValueError as e:
            raise ConfigError(f"sampling parameters are invalid: {e}") from e
        color = list(v["overlay_color"])
        check(len(color) == 3 and all(0 <= int(c) <= 255 for c in color), "overlay_color",
              "must be three integers [r, g, b] in [0, 255]")
        check(0.0 <= v["overlay_alpha"] <= 1.0, "overlay_alpha", "must be in [0, 1]")
        check(v["probability_encoding"] in PROBABILITY_ENCODINGS, "probability_encoding",
              f"must be one of {', '.join(PROBABILITY_ENCODINGS)}")
        check(v["stale_timeout_s"] > 0.0, "stale_timeout_s", "must be > 0")
        check(v["max_image_pixels"] >= 1, "max_image_pixels", "must be >= 1")
        check(v["max_message_bytes"] >= 1, "max_message_bytes", "must be >= 1")
        check(0.0 < v["temporal_alpha"] <= 1.0, "temporal_alpha", "must be in (0, 1]")
        check(v["temporal_reset_gap_s"] > 0.0, "temporal_reset_gap_s", "must be > 0")
        check(v["grid_pose_source"] in GRID_POSE_SOURCES, "grid_pose_source",
              f"must be one of {', '.join(GRID_POSE_SOURCES)}")
        check(bool(str(v["grid_frame"]).strip()), "grid_frame", "must name a frame")
        check(v["camera_height_m"] > 0.0, "camera_height_m", "must be > 0")
        for name in ("grid_resolution_m", "grid_forward_m", "grid_lateral_m", "grid_max_range_m"):
            check(v[name] > 0.0, name, "must be > 0")
        fields = {k: v[k] for k in PARAMETERS}
        fields["overlay_color"] = tuple(int(c) for c in color)
        cfg = cls(**fields)
        try:
            cfg.grid_spec().validate()
            cfg.camera_pose()
        except GridConfigError as e:
            raise ConfigError(f"road_grid parameters are invalid: {e}") from e
        return cfg

    def post(self) -> PostConfig:
        return PostConfig(self.threshold, self.min_blob_area, self.fill_holes_area)

    def grid_spec(self) -> GridSpec:
        return GridSpec(self.grid_resolution_m, self.grid_forward_m, self.grid_lateral_m, self.grid_max_range_m)

    def camera_pose(self) -> CameraPose:
        """The camera pose from the camera_* parameters."""
        return CameraPose.from_mount(self.camera_height_m, self.camera_roll_rad, self.camera_pitch_rad,
                                     self.camera_yaw_rad, self.camera_x_m, self.camera_y_m)


@dataclass
class _Frame:
    msg: Any
    encoding: str  # the raw encoding the overlay's family follows
    received: float  # time.monotonic() at the callback


SegmenterFactory = Callable[..., Any]


def _qos_text(qos: QoSProfile) -> str:
    return f"reliability={qos.reliability.name.lower()}, history={qos.history.name.lower()}, depth={qos.depth}"


class RoadSegmentation:
    """The node's processing, shared by :class:`RoadSegNode` and the managed
    :class:`~road_seg_perception.ros.lifecycle_node.RoadSegLifecycleNode` (a mixin over ``rclpy.node.Node``).

    Subscribe to camera images, segment the road on a worker thread, publish masks and diagnostics.
    Frames are taken by an intake thread (:mod:`.intake`, parameter ``intake_thread``) or, with it off,
    by the executor; either hands them to the worker through the scheduler's latest-frame slot.

    Phases, as a managed node's transitions use them: :meth:`_init_segmentation` declares the parameters
    (node construction); :meth:`configure_processing` validates them, loads the model and creates the
    publishers, subscriptions, timers and worker; :meth:`activate_processing` /
    :meth:`deactivate_processing` start and stop segmenting (frames received while inactive are counted
    as skipped and produce no output); :meth:`cleanup_processing` stops the threads, destroys what
    configure made and frees the model.
    """

    def _init_segmentation(self, segmenter_factory: SegmenterFactory | None, diagnostics_period_s: float) -> None:
        self._factory = segmenter_factory or RoadSegmenter
        self._diagnostics_period_s = diagnostics_period_s
        self._stop = threading.Event()
        self._active = threading.Event()
        self._busy = threading.Lock()  # held by the worker while it processes (and publishes) a frame
        self._worker: threading.Thread | None = None
        self._intake: SubscriptionIntake | None = None
        self._configured_entities: list[Any] = []
        self.config: NodeConfig | None = None
        self.segmenter: Any = None
        self.scheduler: FrameScheduler | None = None
        for name, spec in PARAMETERS.items():
            self.declare_parameter(name, spec.default, spec.descriptor())
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _parameter_values(self) -> dict[str, Any]:
        return {n: self.get_parameter(n).value for n in PARAMETERS}

    @property
    def configured(self) -> bool:
        return self.segmenter is not None

    @property
    def active(self) -> bool:
        return self._active.is_set()

    # ------------------------------------------------------------------ set-up

    def configure_processing(self) -> None:
        """Validate the parameters, load the model, create publishers, subscriptions, timers and the worker.

        Raises :class:`ConfigError` or :class:`ModelFileError` (everything made so far is cleaned up).
        """
        try:
            self._configure()
        except BaseException:
            self.cleanup_processing()
            raise

    def _configure(self) -> None:
        log = self.get_logger()
        config = NodeConfig.from_values(self._parameter_values())
        self._model_lock = threading.Lock()  # swaps the segmenter and sets its post-processing as one step
        self._retired: list[Any] = []  # replaced segmenters, closed by the worker between frames
        self._model_status = "ready"
        self._model_generation = 0  # counts model swaps: the moving average never mixes two models' maps
        self._reverting = False
        precheck_model(self._model_file(config), config.backend, config.device, config.allow_unsafe_model)
        self.segmenter, self._serving_identity = load_until_shutdown(
            lambda: self._load_segmenter(config), lambda: not self.context.ok() or stop_requested())
        self.config = self._serving = config
        self._log_model(self.segmenter, self.config.device)
        self._model_loader = ModelLoader(self._load_segmenter, self._on_model_loaded)
        diagnostics_period_s = self._diagnostics_period_s
        self._stop.clear()

        self.scheduler = FrameScheduler(FrameSampler(self.config.process_every_n, self.config.max_rate_hz))
        self.latency = LatencyTracker(window=300)
        self.input_rate = RateMeter(2.0)
        self.processed_rate = RateMeter(2.0)
        self._started = time.monotonic()
        self._last_received: float | None = None
        self._last_bad_reason = ""
        self._bad_at_last_diag = 0
        self._camera_info: CameraInfo | None = None
        self._ema = ProbabilityEMA(self.config.temporal_alpha, self.config.temporal_reset_gap_s)
        self._grids = GroundGridCache()
        self._intrinsics: Intrinsics | None = None
        self._grid_state = "off"
        self._bad_camera_info = 0
        self._camera_info_error = "no camera_info yet"
        self._tf_pose: TfPoseSource | None = None

        # Reliable with a small history: a reliable reader that acknowledges a little late (rviz, a recorder)
        # still gets every mask; the history only holds samples for retransmission and adds no latency.
        out_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=OUTPUT_DEPTH,
                             reliability=ReliabilityPolicy.RELIABLE)
        qos_opts = QoSOverridingOptions.with_default_policies
        self.mask_pub = self.create_publisher(Image, "road_mask", out_qos, qos_overriding_options=qos_opts())
        self.overlay_pub = self.create_publisher(Image, "road_overlay", out_qos, qos_overriding_options=qos_opts())
        self.probability_pub = self.create_publisher(Image, "road_probability", out_qos,
                                                     qos_overriding_options=qos_opts())
        self.camera_info_pub = None
        self.camera_info_sub = None
        self.grid_pub = None
        self.boundary_pub = None
        if self.config.publish_grid:
            if self.config.grid_pose_source == "tf":
                if not tf_available():
                    raise ConfigError("parameter grid_pose_source='tf' needs tf2_ros, which cannot be imported "
                                      "here; use 'parameters' (camera_* parameters)")
                self._tf_pose = TfPoseSource(self)
            self.grid_pub = self.create_publisher(OccupancyGrid, "road_grid", out_qos,
                                                  qos_overriding_options=qos_opts())
            self.boundary_pub = self.create_publisher(PolygonStamped, "road_boundary", out_qos,
                                                      qos_overriding_options=qos_opts())
            self._grid_state = "waiting for camera_info"
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        in_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        use_intake = self.config.intake_thread and intake_available()
        if self.config.intake_thread and not use_intake:
            log.warning("intake_thread: this rclpy has no usable wait set; the executor delivers camera frames")
        group = NoExecutorGroup() if use_intake else None
        msg_type, topic, on_frame = ((CompressedImage, "image/compressed", self._on_compressed)
                                     if self.config.use_compressed else (Image, "image", self._on_image))
        self.image_sub = self.create_subscription(msg_type, topic, on_frame, in_qos, callback_group=group,
                                                  qos_overriding_options=qos_opts())
        if use_intake:
            self._intake = SubscriptionIntake(self.image_sub, on_frame, self.context, name="road_seg_intake",
                                              on_error=self._on_intake_error).start()
        log.info(f"subscribed to {self.image_sub.topic_name} ({msg_type.__name__}) with QoS "
                 f"{_qos_text(self.image_sub.qos_profile)} (override with "
                 "qos_overrides.<topic>.subscription.reliability|history|depth), taken by "
                 + ("a thread of its own" if use_intake else "the executor"))
        if self.config.publish_camera_info or self.grid_pub is not None:
            info_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
            self.camera_info_sub = self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                            info_qos, qos_overriding_options=qos_opts())
        if self.grid_pub is not None:
            log.info(f"publishing {self.grid_pub.topic_name} and {self.boundary_pub.topic_name} in frame "
                     f"{self.config.grid_frame!r} from "
                     f"{self.camera_info_sub.topic_name} and the camera pose from {self.config.grid_pose_source}")
        if self.config.publish_camera_info:
            self.camera_info_pub = self.create_publisher(CameraInfo, "road_camera_info", out_qos,
                                                         qos_overriding_options=qos_opts())
            log.info(f"passing {self.camera_info_sub.topic_name} through to {self.camera_info_pub.topic_name}")
        log.info(f"publishing {self.mask_pub.topic_name}, {self.overlay_pub.topic_name}, "
                 f"{self.probability_pub.topic_name} with QoS {_qos_text(self.mask_pub.qos_profile)}")

        self.diagnostics_timer = self.create_timer(diagnostics_period_s, self._publish_diagnostics)
        # A camera that stops is reported within STALE_CHECK_PERIOD_S of stale_timeout_s, not at the next tick.
        self._was_stale = False
        self.stale_timer = self.create_timer(STALE_CHECK_PERIOD_S, self._check_stale)
        self._configured_entities = [e for e in (
            self.mask_pub, self.overlay_pub, self.probability_pub, self.diagnostics_pub, self.camera_info_pub,
            self.grid_pub, self.boundary_pub, self.image_sub, self.camera_info_sub, self.diagnostics_timer,
            self.stale_timer)
            if e is not None]
        self._worker = threading.Thread(target=self._worker_loop, name="road_seg_worker", daemon=True)
        self._worker.start()
        declared = set(self._parameters)  # after the subscriptions declared their qos_overrides parameters
        for line in unknown_overrides(self._parameter_overrides, declared):
            log.warning(line)

    def activate_processing(self) -> None:
        """Start segmenting the frames that arrive (and publishing the results)."""
        self._active.set()

    def deactivate_processing(self) -> None:
        """Stop segmenting; returns once a frame in progress is done, so no output follows."""
        self._active.clear()
        with self._busy:
            pass

    def cleanup_processing(self) -> None:
        """Stop the threads, destroy what :meth:`configure_processing` made and free the model."""
        self._active.clear()
        self._shutdown_worker()
        self._intake = None
        self._worker = None
        destroy = {Timer: self.destroy_timer, Subscription: self.destroy_subscription}
        for entity in self._configured_entities:
            destroy.get(type(entity), self.destroy_publisher)(entity)
        self._configured_entities = []
        tf_pose = getattr(self, "_tf_pose", None)
        if tf_pose is not None:
            tf_pose.listener.unregister()  # its /tf subscriptions
            self._tf_pose = None
        self.grid_pub = None
        self.boundary_pub = None
        self.camera_info_sub = None
        self.camera_info_pub = None
        self.segmenter = None
        self.config = None

    @staticmethod
    def _model_file(cfg: NodeConfig) -> str:
        """``model_path``, else the shipped model: float for Keras, when ONNX Runtime has a GPU or on an x86-64
        CPU without VNNI, else INT8."""
        if cfg.model_path:
            return cfg.model_path
        gpu = cfg.device != "cpu" and cfg.backend != "keras" and onnx_gpu_available()
        return str(default_model_path(float_model=cfg.backend == "keras" or gpu))

    def _load_segmenter(self, cfg: NodeConfig) -> tuple[Any, tuple]:
        """Load ``cfg``'s model; return it with the identity its files had before the load began."""
        path = self._model_file(cfg)
        identity = model_files_identity(path)
        segmenter = self._factory(model_path=path, backend=cfg.backend, device=cfg.device, post=cfg.post(),
                                  allow_unsafe=cfg.allow_unsafe_model, threads=cfg.inference_threads,
                                  spinning=cfg.inference_spinning)
        self._set_run_time_settings(segmenter, cfg)
        return segmenter, identity

    @staticmethod
    def _set_run_time_settings(segmenter: Any, cfg: NodeConfig) -> None:
        """Give a model the settings that change without a reload: post-processing and flip averaging."""
        segmenter.post = cfg.post()
        segmenter.flip_average = cfg.flip_average

    def wait_for_model(self, timeout: float | None = None) -> bool:
        """Wait until no model load is queued or running (tests, tools); False on timeout."""
        return self._model_loader.wait_idle(timeout)

    def _log_model(self, segmenter: Any, requested_device: str) -> None:
        info = segmenter.info
        requested = info.get("requested_model", info["model"])
        named = "" if requested == info["model"] else f" for model_path {requested}"
        self.get_logger().info(f"model {info['model']}{named} (input {info.get('input_size', '?')}) on backend "
                               f"{info['backend']}, device {info['device']}")
        if requested_device == "gpu" and not str(info["device"]).startswith("gpu"):
            self.get_logger().warning("device 'gpu' was requested but no usable GPU was found: "
                                      f"falling back to CPU ({info['backend']})")

    # ------------------------------------------------------------------ parameters

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        if not changes:
            return SetParametersResult(successful=True)
        old = self.config
        try:
            new = NodeConfig.from_values({**(old.__dict__ if old else self._parameter_values()), **changes})
        except ConfigError as e:
            self.get_logger().warning(f"refused parameter change: {e}")
            return SetParametersResult(successful=False, reason=str(e))
        if old is None:  # not configured (managed node): checked now, used when it is configured
            return SetParametersResult(successful=True)
        log = self.get_logger()
        load = _model_key(new) != _model_key(old) and not self._reverting
        if not load and "model_path" in changes and not self._model_loader.busy():
            load = model_files_identity(self._model_file(new)) != self._serving_identity
            if not load:
                log.info(f"model_path {self._model_file(new)}: same path and the file is unchanged, so the model "
                         "was not reloaded (change model_reload to force a reload)")
        if load:
            try:  # cheap checks here; the load runs on the loader thread, the old model serves meanwhile
                precheck_model(self._model_file(new), new.backend, new.device, new.allow_unsafe_model)
            except (ModelFileError, ValueError) as e:
                reason = f"model not changed, the old one keeps serving: {e}"
                log.error(f"refused parameter change: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        self._apply(old, new)
        if load:
            self._model_status = f"loading {self._model_file(new)}"
            self._model_loader.submit(new)
            log.info(f"loading model {self._model_file(new)} on the loader thread; the current model serves "
                     "until it is ready")
        changed = {k: v for k, v in changes.items() if getattr(old, k) != getattr(new, k)}
        if changed:
            log.info("parameters changed: " + ", ".join(f"{k}={v!r}" for k, v in changed.items()))
        return SetParametersResult(successful=True)

    def _apply(self, old: NodeConfig, new: NodeConfig) -> None:
        with self._model_lock:
            self._set_run_time_settings(self.segmenter, new)
            self.config = new
        self._ema.configure(new.temporal_alpha, new.temporal_reset_gap_s)
        if not new.temporal_smoothing:
            self._ema.reset()
        if (new.process_every_n, new.max_rate_hz) != (old.process_every_n, old.max_rate_hz):
            self.scheduler.sampler.configure(new.process_every_n, new.max_rate_hz)

    def _on_model_loaded(self, request: LoadRequest, loaded: tuple[Any, tuple] | None,
                         error: BaseException | None) -> None:
        """Loader thread: swap a loaded model in, or report the failure and revert the model parameters."""
        log = self.get_logger()
        if self._stop.is_set() or not self._model_loader.is_latest(request):
            if loaded is not None:  # superseded by a newer request (or shutting down)
                self._retire(loaded[0])
            return
        path = self._model_file(request.config)
        if error is None and loaded is not None:
            segmenter, identity = loaded
            with self._model_lock:
                self._set_run_time_settings(segmenter, self.config)
                old, self.segmenter = self.segmenter, segmenter
                self._model_generation += 1
                self._serving, self._serving_identity = request.config, identity
            self._retire(old)
            self._model_status = "ready"
            self._log_model(segmenter, request.config.device)
            return
        why = error if isinstance(error, ModelFileError) else f"{type(error).__name__}: {error}"
        self._model_status = f"loading {path} failed; the previous model keeps serving: {why}"
        serving = self._serving
        revert = [Parameter(k, value=getattr(serving, k)) for k in MODEL_PARAMETERS
                  if getattr(self.config, k) != getattr(serving, k)]
        log.error(f"model not changed, the old one keeps serving: {why}; reverting "
                  + ", ".join(f"{p.name}={p.value!r}" for p in revert))
        if revert:
            self._reverting = True  # back to the serving model's settings: nothing to load
            try:
                self.set_parameters(revert)
            finally:
                self._reverting = False

    def _retire(self, segmenter: Any) -> None:
        with self._model_lock:
            self._retired.append(segmenter)

    def _close_retired(self) -> None:
        """Worker thread, between frames: free replaced models (Keras clears its session)."""
        with self._model_lock:
            retired, self._retired = self._retired, []
        for segmenter in retired:
            close = getattr(segmenter, "close", None)
            if close is not None:
                try:
                    close()
                except Exception as e:  # a failing close must not stop the worker
                    self.get_logger().warning(f"closing the replaced model failed: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------ input (intake or executor thread)

    def _count_bad(self, kind: str, error: Exception) -> None:
        self._last_bad_reason = str(error)
        self.get_logger().warning(f"dropped a bad {kind} message: {error}",
                                  throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)

    def _received(self) -> float | None:
        """Count an arriving message; its arrival time, or None (counted as skipped) while inactive."""
        now = time.monotonic()
        self._last_received = now
        self.input_rate.tick(now)
        if not self._active.is_set():
            self.scheduler.skip()
            return None
        return now

    def _on_image(self, msg: Image) -> None:
        if (now := self._received()) is None:
            return
        cfg = self.config
        try:
            encoding = validate_image_msg(msg, cfg.max_image_pixels, cfg.max_message_bytes)[0]
        except ImageConversionError as e:
            self.scheduler.reject_bad()
            self._count_bad("Image", e)
            return
        self.scheduler.offer(_Frame(msg, encoding, now), now)

    def _on_compressed(self, msg: CompressedImage) -> None:
        if (now := self._received()) is None:
            return
        cfg = self.config
        try:
            compressed_header(msg, cfg.max_message_bytes, cfg.max_image_pixels)
        except ImageConversionError as e:
            self.scheduler.reject_bad()
            self._count_bad("CompressedImage", e)
            return
        self.scheduler.offer(_Frame(msg, compressed_source_encoding(msg.format), now), now)

    def _on_intake_error(self, error: Exception) -> None:
        self._last_bad_reason = f"image intake failed: {type(error).__name__}: {error}"
        self.get_logger().error(self._last_bad_reason, throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg
        if self.grid_pub is None:
            return
        try:
            self._intrinsics = intrinsics_from_camera_info(msg)
        except GridConfigError as e:
            self._intrinsics = None
            self._bad_camera_info += 1
            self._camera_info_error = f"camera_info unusable: {e}"
            self.get_logger().warning(f"road_grid: dropped a bad CameraInfo message: {e}",
                                      throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)

    # ------------------------------------------------------------------ worker thread

    def _worker_loop(self) -> None:
        while not self._stop.is_set():
            if self._retired:
                self._close_retired()
            frame = self.scheduler.take(timeout=0.1)
            if frame is None:
                continue
            with self._busy:
                if not self._active.is_set():  # deactivated while the frame waited
                    self.scheduler.discard()
                    continue
                ok = False
                try:
                    ok = self._process(frame)
                except Exception as e:  # one failing frame must not stop the node
                    if self._stop.is_set() or not self.context.ok():
                        break
                    self._last_bad_reason = f"processing failed: {type(e).__name__}: {e}"
                    self.get_logger().error(f"frame processing failed: {traceback.format_exc()}",
                                            throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)
                finally:
                    self.scheduler.finish(ok)

    def _process(self, frame: _Frame) -> bool:
        with self._model_lock:
            segmenter, model_generation = self.segmenter, self._model_generation
        cfg = self.config
        msg = frame.msg
        try:
            if isinstance(msg, CompressedImage) or not hasattr(msg, "encoding"):
                rgb = compressed_to_rgb(msg, cfg.max_message_bytes, cfg.max_image_pixels)
            else:
                rgb = image_to_rgb(msg, cfg.max_image_pixels, cfg.max_message_bytes)
        except ImageConversionError as e:
            self._count_bad(type(msg).__name__, e)
            return False
        want_overlay = cfg.publish_overlay and self.overlay_pub.get_subscription_count() > 0
        want_prob = cfg.publish_probability and self.probability_pub.get_subscription_count() > 0
        header = msg.header
        temporal = {}  # smooth= only when on: segment() wrappers without it keep working
        if cfg.temporal_smoothing:  # a new image size or a new model restarts the average
            temporal["smooth"] = partial(self._ema.update, stamp_s=header.stamp.sec + header.stamp.nanosec * 1e-9,
                                         key=(rgb.shape, model_generation))
        result = segmenter.segment(rgb, with_probability=want_prob, **temporal)
        self.mask_pub.publish(numpy_to_image_msg(result.mask, "mono8", header))
        if want_overlay:
            overlay = draw_overlay(rgb, result.mask, cfg.overlay_color, cfg.overlay_alpha, boundary=True)
            arr, enc = rgb_to_encoding(overlay, frame.encoding)
            self.overlay_pub.publish(numpy_to_image_msg(arr, enc, header))
        if want_prob and result.probability is not None:
            arr = probability_image(result.probability, cfg.probability_encoding)
            self.probability_pub.publish(numpy_to_image_msg(arr, cfg.probability_encoding, header))
        if self.grid_pub is not None:
            want_grid = self.grid_pub.get_subscription_count() > 0
            want_boundary = self.boundary_pub.get_subscription_count() > 0
            if want_grid or want_boundary:
                self._publish_grid(result.mask, header, want_grid, want_boundary)
        info = self._camera_info
        if self.camera_info_pub is not None and info is not None:
            self.camera_info_pub.publish(CameraInfo(
                header=header, height=info.height, width=info.width, distortion_model=info.distortion_model,
                d=info.d, k=info.k, r=info.r, p=info.p, binning_x=info.binning_x, binning_y=info.binning_y,
                roi=info.roi))
        done = time.monotonic()
        self.latency.add(done - frame.received)
        self.processed_rate.tick(done)
        return True

    def _publish_grid(self, mask: Any, header: Any, want_grid: bool = True, want_boundary: bool = False) -> None:
        """road_grid and/or road_boundary of one mask: the table is rebuilt only when camera_info, pose or grid
        parameters change."""
        cfg, intrinsics = self.config, self._intrinsics
        try:
            if intrinsics is None:
                raise GridConfigError(self._camera_info_error)
            pose = (self._tf_pose.pose(cfg.grid_frame, header.frame_id) if self._tf_pose is not None
                    else cfg.camera_pose())
            spec = cfg.grid_spec()
            grid = self._grids.project(mask, intrinsics, pose, spec)
        except GridConfigError as e:
            self._grid_state = f"not published: {e}"
            self.get_logger().warning(f"road_grid not published: {e}", throttle_duration_sec=BAD_INPUT_LOG_PERIOD_S)
            return
        if want_grid:
            self.grid_pub.publish(occupancy_grid_msg(grid, spec, header.stamp, cfg.grid_frame))
        if want_boundary:
            self.boundary_pub.publish(polygon_msg(road_boundary(grid, spec), header.stamp, cfg.grid_frame))
        self._grid_state = "publishing"

    # ------------------------------------------------------------------ diagnostics

    def diagnostic_status(self) -> DiagnosticStatus:
        """The node's current status: rates, latency, frame counts, model; WARN when the camera is stale."""
        now = time.monotonic()
        cfg = self.config
        counts = self.scheduler.counts()
        stale, since = stale_status(now, self._last_received, self._started, cfg.stale_timeout_s)
        p50, p95 = self.latency.percentile(50), self.latency.percentile(95)
        processed_hz = self.processed_rate.rate(now)
        new_bad = counts.bad - self._bad_at_last_diag
        self._bad_at_last_diag = counts.bad
        topic = self.image_sub.topic_name
        if not self._active.is_set():
            level, message = DiagnosticStatus.OK, f"inactive: frames on {topic} are skipped"
        elif stale:
            level, message = DiagnosticStatus.WARN, f"no image on {topic} for {since:.1f} s"
        elif new_bad and processed_hz == 0.0:
            level, message = DiagnosticStatus.WARN, f"only bad images on {topic}: {self._last_bad_reason}"
        else:
            level, message = DiagnosticStatus.OK, f"segmenting {topic} at {processed_hz:.1f} Hz"
        info = self.segmenter.info

        def ms(v: float | None) -> str:
            return "nan" if v is None else f"{v * 1e3:.1f}"

        values = {
            "input_rate_hz": f"{self.input_rate.rate(now):.2f}",
            "processed_rate_hz": f"{processed_hz:.2f}",
            "latency_p50_ms": ms(p50),
            "latency_p95_ms": ms(p95),
            "frames_received": str(counts.received),
            "frames_processed": str(counts.processed),
            "frames_skipped": str(counts.skipped),
            "frames_dropped_stale": str(counts.dropped),
            "frames_bad": str(counts.bad),
            "frames_pending": str(counts.pending),
            "seconds_since_last_image": f"{since:.2f}",
            "backend": str(info["backend"]),
            "device": str(info["device"]),
            "model": str(info["model"]),
            "requested_model": str(info.get("requested_model", info["model"])),
            "model_status": self._model_status,
            "model_input_size": str(info.get("input_size", "")),
            "input_topic": topic,
            "last_bad_reason": self._last_bad_reason,
            "grid": self._grid_state,
            "grid_tables_built": str(self._grids.builds),
            "camera_info_bad": str(self._bad_camera_info),
            "temporal_smoothing_resets": str(self._ema.resets),
            "active": str(self._active.is_set()).lower(),
        }
        return DiagnosticStatus(level=level, name=f"{self.get_name()}: road segmentation", message=message,
                                hardware_id=str(info["device"]),
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    def _check_stale(self) -> None:
        """Publish diagnostics at once when the camera goes stale."""
        stale, _ = stale_status(time.monotonic(), self._last_received, self._started, self.config.stale_timeout_s)
        if stale and not self._was_stale:
            self._publish_diagnostics()
        self._was_stale = stale

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostic_status()]
        self.diagnostics_pub.publish(msg)

    # ------------------------------------------------------------------ shutdown

    def _shutdown_worker(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if hasattr(self, "_model_loader"):
            self._model_loader.stop(timeout=0.5)  # a daemon thread: a load still running is abandoned
        if self._intake is not None:
            self._intake.stop(timeout)
        if self.scheduler is not None:
            self.scheduler.close()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout)


class RoadSegNode(RoadSegmentation, Node):
    """``road_seg_node``: configured and active from construction until :meth:`destroy_node`.

    ``segmenter_factory`` (default :class:`RoadSegmenter`) is called with ``model_path, backend,
    device, post, allow_unsafe, threads, spinning`` keywords; tests pass a wrapper to make inference slow.
    ``diagnostics_period_s`` is the ``/diagnostics`` period. Other keywords go to ``rclpy.node.Node``
    (``parameter_overrides``, ``namespace``, ``context``, ``cli_args``...).
    Raises :class:`ConfigError` or :class:`ModelFileError` when it cannot start.
    """

    def __init__(self, node_name: str = NODE_NAME, *, segmenter_factory: SegmenterFactory | None = None,
                 diagnostics_period_s: float = 1.0, **node_kwargs: Any):
        Node.__init__(self, node_name, **node_kwargs)
        try:
            self._init_segmentation(segmenter_factory, diagnostics_period_s)
            self.configure_processing()
            self.activate_processing()
        except BaseException:
            Node.destroy_node(self)
            raise

    def destroy_node(self) -> None:
        """Stop and join the worker, then destroy the node."""
        self.cleanup_processing()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the node until Ctrl-C or SIGTERM; exit 1 when it cannot start (bad model or parameter)."""
    return run_node(RoadSegNode, NODE_NAME, args, expected_errors=(ModelFileError, ConfigError),
                    process_exits_after=True)


if __name__ == "__main__":
    sys.exit(main())
