"""Writing a checkpoint in other formats: ONNX and safetensors."""
