"""Reading fitted results: plots, ArviZ conversion, model comparison.

``emvi.runs.from_run(run_dir)`` gives any fitted run's ``arviz.InferenceData``; the per-model exports are
``emvi.analysis.mixture.mixture_inference_data``, ``emvi.analysis.hmm.hmm_inference_data``,
``emvi.analysis.ppca.ppca_inference_data``, ``emvi.analysis.lda.lda_inference_data`` and
``emvi.analysis.local_latents.local_latent_inference_data`` (VAE and other per-item latents).
"""
