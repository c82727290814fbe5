"""kokpit: final-state fleet management for Kubernetes (Kube on Kube)."""
