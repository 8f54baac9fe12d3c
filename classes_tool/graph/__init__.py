"""Read model files of both Keras dialects, splice layers into their graph, rebuild them."""

from classes_tool.graph.keras_classes import register_application_layers
from classes_tool.graph.model_graph import ModelGraph, Node, TensorRef
from classes_tool.graph.reader import file_kind, graph_from_model, read_model
from classes_tool.graph.rebuild import build_model
from classes_tool.graph.transform import insert_after, output_shapes, splice

__all__ = ["ModelGraph", "Node", "TensorRef", "build_model", "file_kind", "graph_from_model",
           "insert_after", "output_shapes", "read_model", "splice"]

register_application_layers()  # files this tool writes name them without their module
