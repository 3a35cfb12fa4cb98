"""ament_python package definition for road_seg_perception."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

package_name = "road_seg_perception"


def requirements(name: str) -> list[str]:
    """The pinned requirement lines of a requirements file (comments dropped)."""
    lines = (Path(__file__).resolve().parent / name).read_text().splitlines()  # colcon symlinks setup.py
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#")[0].strip()]


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*", "bench", "bench.*"]),  # bench/: checkout only
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*")),
        ("share/" + package_name + "/models", glob("models/*")),
    ],
    install_requires=["setuptools"],
    # pip install .[runtime] on a robot (no TensorFlow); .[runtime,train] to train and export models;
    # .[runtime,fleet] to evaluate many bags on Ray (road-seg-eval --workers)
    extras_require={"runtime": requirements("requirements.txt"), "train": requirements("requirements-train.txt"),
                    "fleet": requirements("requirements-fleet.txt")},
    zip_safe=True,
    maintainer="road_seg_perception developers",
    maintainer_email="dev@road-seg.local",
    description="Road (drivable-area) segmentation for ROS 2 with a U-Net, training and rosbag tooling.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "road_seg_node = road_seg_perception.ros.node:main",
            "road_seg_lifecycle_node = road_seg_perception.ros.lifecycle_node:main",
            "road-seg-train = road_seg_perception.training.cli:main",
            "road-seg-predict = road_seg_perception.tools.predict:main",
            "road-seg-export = road_seg_perception.training.export:main",
            "road-seg-soup = road_seg_perception.training.soup:main",
            "road-seg-quantize = road_seg_perception.tools.quantize:main",
            "road-seg-threshold = road_seg_perception.tools.threshold:main",
            "road-seg-teacher = road_seg_perception.training.teacher:main",
            "road-seg-bag = road_seg_perception.tools.bag:main",
            "road-seg-eval = road_seg_perception.tools.fleet:main",
            "road-seg-replay = road_seg_perception.ros.replay:main",
        ],
    },
)
