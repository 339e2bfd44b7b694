"""Model parts: backbones, mask generator, supervision strategies, open-vocabulary inference."""
