"""The bundled demo: a stand-in evaluation with every fault kind, and the demo scenario."""
