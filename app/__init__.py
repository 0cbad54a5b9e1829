"""The movie API service: FastAPI app, Redis features and the Arq worker."""
