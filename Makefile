# Entry points; each one does the set-up it needs first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: setup test lint ros-build demo train ship samples bench soak clean

setup:
	@ROAD_SEG_VENV=$(VENV) scripts/setup_env.sh

lint: setup
	$(VENV)/bin/ruff check road_seg_perception test launch bench scripts setup.py

# The package built with colcon into build/colcon (gitignored), as `ros2 launch` and the launch tests use it:
# a --symlink-install, so the installed package runs this checkout's code. `. build/colcon/install/local_setup.sh`
# puts it on the ament index and PYTHONPATH.
ros-build: setup
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/colcon --log-base build/colcon/log build --paths . \
		--build-base build/colcon/build --install-base build/colcon/install --symlink-install

test: lint ros-build
	ROAD_SEG_COLCON_BUILT=1 $(PY) -m pytest -m "not soak" test

demo: setup
	$(PY) -m road_seg_perception.tools.demo

# The shipped model, in six stages: 10 epochs at 192x256, then 2 at 256x352 from that checkpoint (lr x0.1),
# then 2 more the same way (the shipped stage 3 adapted the model to bilinear resizing), then 6 at lr x0.3,
# then 6 at lr x0.15, then three runs of 3 epochs from stage 5 (lr x0.15, IDD-Lite drawn x2, seeds 1-3) whose
# weights are averaged into runs/road_mnv2_soup, the shipped run (models/MODEL_CARD.md).
SOUP_SEEDS := 1 2 3
train: setup
	$(PY) -m road_seg_perception.training.cli --config config/train_road.yaml
	$(PY) -m road_seg_perception.training.cli --config config/train_road.yaml $(HIRES_STAGE)
	$(PY) -m road_seg_perception.training.cli --config config/train_road.yaml $(STAGE3)
	$(PY) -m road_seg_perception.training.cli --config config/train_road.yaml $(STAGE4)
	$(PY) -m road_seg_perception.training.cli --config config/train_road.yaml $(STAGE5)
	for s in $(SOUP_SEEDS); do $(PY) -m road_seg_perception.training.cli --config config/train_road.yaml \
		$(STAGE6) --set train.seed=$$s --set output.name=road_mnv2_idd2s$$s || exit 1; done
	mkdir -p runs/road_mnv2_soup
	$(PY) -m road_seg_perception.training.soup runs/road_mnv2_soup/model.keras \
		$(foreach s,$(SOUP_SEEDS),runs/road_mnv2_idd2s$(s)/model.keras)
	$(PY) -m road_seg_perception.training.export runs/road_mnv2_soup/model.keras

HIRES_STAGE := --init-from runs/road_mnv2/model.keras --set 'model.input_hw=[256, 352]' --set train.epochs=2 \
	--set output.name=road_mnv2_hires
STAGE3 := --init-from runs/road_mnv2_hires/model.keras --set 'model.input_hw=[256, 352]' --set train.epochs=2 \
	--set output.name=road_mnv2_linear3 --set train.cache_dir=runs/cache_linear
STAGE4 := --init-from runs/road_mnv2_linear3/model.keras --set 'model.input_hw=[256, 352]' --set train.epochs=6 \
	--set train.finetune_lr_scale=0.3 --set output.name=road_mnv2_long4
STAGE5 := --init-from runs/road_mnv2_long4/model.keras --set 'model.input_hw=[256, 352]' --set train.epochs=6 \
	--set train.finetune_lr_scale=0.15 --set output.name=road_mnv2_long5
STAGE6 := --init-from runs/road_mnv2_long5/model.keras --set 'model.input_hw=[256, 352]' --set train.epochs=3 \
	--set train.finetune_lr_scale=0.15 --set datasets.idd.weight=2.0

# Replace the shipped files with the trained run's, its operating threshold (road-seg-threshold on training
# frames) baked into its logit bias: the float pair and the checked INT8 copy the node runs (the run, the
# threshold and the quantize options are the model card's: scripts/model_card.py RUN, OPERATING_CMD, QUANTIZE).
ship: setup
	$(PY) scripts/model_card.py --ship

# The README's figure: the shipped float model's masks beside the ground truth, 2 frames of each validation split;
# and docs/training.md's: the 3 frames of each split that it scores worst.
samples: setup
	$(PY) -m road_seg_perception.tools.sample_sheet --config config/train_road.yaml \
		--model models/road_unet_camvid.onnx --per-split 2 --out docs/samples.jpg
	$(PY) -m road_seg_perception.tools.sample_sheet --config config/train_road.yaml \
		--model models/road_unet_camvid.onnx --per-split 3 --pick worst --out docs/worst.jpg

bench: setup
	$(PY) bench/run_bench.py

soak: setup
	$(PY) -m pytest -m soak test -s

clean:
	rm -rf build install log .pytest_cache
