"""``road_seg_lifecycle_node``: the road segmentation node as a managed (lifecycle) node.

Same parameters, topics, diagnostics and processing as ``road_seg_node``
(:class:`~road_seg_perception.ros.node.RoadSegmentation`); a lifecycle manager (Nav2's, ``ros2
lifecycle set``, launch's ``ChangeState`` events) drives it through the standard transitions:

- ``configure``: validate the parameters and load the model; FAILURE with the reason logged when
  either is bad (the node stays unconfigured, parameters can be fixed and configure retried).
  Publishers, subscriptions, ``/diagnostics`` and the worker exist from here on.
- ``activate``: segment incoming frames and publish the results.
- ``deactivate``: stop segmenting; frames that arrive are counted as skipped, nothing is published.
- ``cleanup``: stop the worker, destroy the topics and close the model (back to unconfigured).
- ``shutdown`` (from any state): the same clean-up, then the process exits with status 0.
"""

from __future__ import annotations

import sys
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn

from road_seg_perception.core.model_io import ModelFileError
from road_seg_perception.ros.node import ConfigError, RoadSegmentation, SegmenterFactory
from road_seg_perception.ros.node_process import run_node

LIFECYCLE_NODE_NAME = "road_seg_node"
#: Seconds the process keeps serving after ``shutdown``, so the transition's response reaches the caller.
SHUTDOWN_LINGER_S = 0.5


class RoadSegLifecycleNode(RoadSegmentation, LifecycleNode):
    """The managed node: parameters declared at construction, everything else done by the transitions.

    Keywords as for :class:`~road_seg_perception.ros.node.RoadSegNode`.
    """

    def __init__(self, node_name: str = LIFECYCLE_NODE_NAME, *, segmenter_factory: SegmenterFactory | None = None,
                 diagnostics_period_s: float = 1.0, **node_kwargs: Any):
        LifecycleNode.__init__(self, node_name, **node_kwargs)
        self.finalized = False
        self.last_failure = ""
        try:
            self._init_segmentation(segmenter_factory, diagnostics_period_s)
        except BaseException:
            LifecycleNode.destroy_node(self)
            raise

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.configure_processing()
        except (ConfigError, ModelFileError) as e:
            return self._fail(f"configure failed: {e}")
        except Exception as e:  # a model the runtime refuses, or anything unexpected
            return self._fail(f"configure failed: {type(e).__name__}: {e}")
        self.get_logger().info("configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.activate_processing()
        self.get_logger().info("active: segmenting")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.deactivate_processing()
        self.get_logger().info("inactive: incoming frames are skipped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup_and_close()
        self.get_logger().info("cleaned up: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup_and_close()
        self.finalized = True
        self.get_logger().info(f"shut down from {state.label}")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup_and_close()
        self.get_logger().error(f"error while {state.label}: cleaned up, back to unconfigured")
        return TransitionCallbackReturn.SUCCESS

    def _cleanup_and_close(self) -> None:
        """Stop processing and destroy the topics, then close the model and any replaced one not yet closed
        (the worker is joined by then; a Keras model also clears Keras' session)."""
        models = [m for m in (self.segmenter, *getattr(self, "_retired", ())) if m is not None]
        self.cleanup_processing()
        self._retired = []
        for model in models:
            close = getattr(model, "close", None)
            try:
                if close is not None:
                    close()
            except Exception as e:  # a failing close must not fail the transition
                self.get_logger().warning(f"closing the model failed: {type(e).__name__}: {e}")

    def _fail(self, reason: str) -> TransitionCallbackReturn:
        self.last_failure = reason
        self.get_logger().error(reason)
        return TransitionCallbackReturn.FAILURE

    def destroy_node(self) -> None:
        """Clean up whatever state the node is in, then destroy it."""
        self.cleanup_processing()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    """Run the managed node until ``shutdown``, Ctrl-C or SIGTERM (exit 0)."""
    return run_node(RoadSegLifecycleNode, LIFECYCLE_NODE_NAME, args, finished=lambda node: node.finalized,
                    linger_s=SHUTDOWN_LINGER_S, process_exits_after=True)


if __name__ == "__main__":
    sys.exit(main())
