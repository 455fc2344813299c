#!/usr/bin/env bash
# spinejax: the one entry point for people.
#   ./run.sh          set up .venv, then the whole pipeline on the synthetic cohort (runs/default/)
#   ./run.sh test     the test suite (what CI runs)
#   ./run.sh ablate   the default pipeline, then the ablation study (data size, loss, region) and its table
#   ./run.sh study    the same at study scale: 3,000 people in runs/study, records at 2 mm along the spine,
#                     pipeline then ablation (about 3-4 h on 2 cores; run it again after an interruption and it
#                     resumes where it stopped)
#   ./run.sh setup    only create/update .venv
# Environment: SPINEJAX_RUN (output folder, default runs/default), SPINEJAX_SUBJECTS (default 600),
# SPINEJAX_SEED (default 0), SPINEJAX_RECORDS_CONFIG (the records plan: configs/records.py, for study
# configs/records.py:rows_2mm), PYTHON (interpreter for the venv, default python3).
set -euo pipefail
cd "$(dirname "$0")"

if [ "${1:-all}" = study ]; then  # study scale: its own folder, 5x the people, records at 2 mm along the spine
  RUN_DIR=${SPINEJAX_RUN:-runs/study}
  SUBJECTS=${SPINEJAX_SUBJECTS:-3000}
  RECORDS_CONFIG=${SPINEJAX_RECORDS_CONFIG:-configs/records.py:rows_2mm}
else
  RUN_DIR=${SPINEJAX_RUN:-runs/default}
  SUBJECTS=${SPINEJAX_SUBJECTS:-600}
  RECORDS_CONFIG=${SPINEJAX_RECORDS_CONFIG:-configs/records.py}
fi
SEED=${SPINEJAX_SEED:-0}
PY=.venv/bin/python

stage() {  # stage NAME COMMAND...: announce, run, time
  local name=$1 start
  shift
  echo "==> ${name}"
  start=$(date +%s)
  "$@"
  echo "<== ${name}: done in $(( $(date +%s) - start )) s"
}

setup() {
  if [ ! -x "${PY}" ]; then
    "${PYTHON:-python3}" -m venv .venv
  fi
  local stamp=.venv/.requirements.sha256 want
  want=$(cat requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
  if [ "$(cat "${stamp}" 2>/dev/null || true)" != "${want}" ]; then
    "${PY}" -m pip install --quiet --upgrade pip
    "${PY}" -m pip install --quiet -r requirements.txt
    # spinejax itself, editable in 'compat' mode: the checkout's folder goes on .venv's path, so the checkout's
    # stages (data_prep, analysis, configs; not part of a plain `pip install .`) also run from any directory
    "${PY}" -m pip install --quiet --no-deps -e . --config-settings editable_mode=compat \
      > .venv/spinejax-install.log 2>&1 \
      || { cat .venv/spinejax-install.log; exit 1; }  # setuptools' build warnings only when it fails
    echo "${want}" > "${stamp}"
  else
    echo "requirements.txt unchanged since the last install; nothing to install"
  fi
  # spinejax's oneDNN convolution for CPU training (spinejax/native/): compiled once per source and library; if it
  # cannot be built here, training still runs, with XLA's convolution, and the line says why
  "${PY}" -m spinejax.native.build || true
}

secret() {  # the key for pseudonymous ids: made once per run folder, kept out of every output
  local key="${RUN_DIR}/secret.key"
  if [ ! -s "${key}" ]; then
    (umask 077; "${PY}" -c 'import secrets; print(secrets.token_hex(32))' > "${key}")
    echo "made ${key} (the key for pseudonymous ids; keep it private)"
  fi
}

predict_check() {  # predict_check KEY: lay out the test split's raw scans, predict them, compare with evaluate
  local check="${RUN_DIR}/predict_check"
  "${PY}" -m analysis.prediction_check --stage=layout --cohort="${RUN_DIR}/cohort" --records="${RUN_DIR}/records" \
    --secret_file="$1" --out="${check}"
  "${PY}" -m spinejax.predict --model="${RUN_DIR}/bundle" --input="${check}/scans" --out="${check}/predicted"
  "${PY}" -m analysis.prediction_check --stage=compare --workdir="${RUN_DIR}/train" --secret_file="$1" \
    --out="${check}"
}

pipeline() {
  mkdir -p "${RUN_DIR}"
  secret
  local key="${RUN_DIR}/secret.key"
  stage "synthetic cohort (${SUBJECTS} subjects, seed ${SEED}) -> ${RUN_DIR}/cohort" \
    "${PY}" -m data_prep.synthesize --out="${RUN_DIR}/cohort" --subjects="${SUBJECTS}" --seed="${SEED}"
  # As a real site would, the pipeline reads the pathology table made from the cohort's free-text reports (each
  # site in its own template); the true table stays in cohort/reports.csv, and the check holds one against the
  # other. A schema naming the made table (table: report_features/reports.csv) is all that differs.
  local graded="${RUN_DIR}/cohort/report_features" schema="${RUN_DIR}/cohort_schema_from_text.yaml"
  stage "free-text reports -> pathology table ${graded}" \
    "${PY}" -m data_prep.report_features --input="${RUN_DIR}/cohort/reports_text.csv" --out="${graded}"
  stage "the table read from the reports against the true grades -> ${graded}/truth_check.csv" \
    "${PY}" -m analysis.report_text_truth --cohort="${RUN_DIR}/cohort" --graded="${graded}"
  sed -e 's#^table: .*#table: report_features/reports.csv#' "${RUN_DIR}/cohort/cohort_schema.yaml" > "${schema}.tmp"
  cmp -s "${schema}.tmp" "${schema}" && rm "${schema}.tmp" || mv "${schema}.tmp" "${schema}"
  stage "records (preprocess, de-identify, shard) -> ${RUN_DIR}/records" \
    "${PY}" -m data_prep.build_records --config="${RECORDS_CONFIG}" --input="${RUN_DIR}/cohort" \
    --out="${RUN_DIR}/records" --secret_file="${key}" --config.schema_file="${schema}"
  stage "normal-spine eligibility -> ${RUN_DIR}/eligibility" \
    "${PY}" -m data_prep.eligibility --input="${RUN_DIR}/cohort" --out="${RUN_DIR}/eligibility" \
    --secret_file="${key}" --config.schema_file="${schema}"
  stage "eligibility against the synthetic truth -> ${RUN_DIR}/eligibility/truth_check.json" \
    "${PY}" -m analysis.eligibility_truth --cohort="${RUN_DIR}/cohort" --eligibility="${RUN_DIR}/eligibility" \
    --secret_file="${key}" --schema_file="${schema}"
  # A model of records or eligibility that changed since (a fixed row, another plan) is trained again.
  stage "training (CPU preset, eligible subjects, whole spine) -> ${RUN_DIR}/train" \
    "${PY}" -m spinejax.main --config=configs/default.py:cpu --workdir="${RUN_DIR}/train" --retrain_if_inputs_changed \
    --config.data.records_dir="${RUN_DIR}/records" \
    --config.data.eligibility_csv="${RUN_DIR}/eligibility/eligibility.csv"
  if [ "${RUN_DIR}/train/predictions/metrics.json" -nt "${RUN_DIR}/train/summary.json" ]; then
    echo "==> evaluation: predictions are newer than the trained model; skipped"
  else
    stage "evaluation (best checkpoint, every split) -> ${RUN_DIR}/train/predictions" \
      "${PY}" -m spinejax.evaluate --workdir="${RUN_DIR}/train"
  fi
  stage "Grad-CAM of the test split -> ${RUN_DIR}/train/gradcam" \
    "${PY}" -m analysis.gradcam --workdir="${RUN_DIR}/train" --n=8
  # Associations on validation and test subjects pooled: the default cohort's test split alone is small.
  stage "bias correction, spine age gap, associations, report -> ${RUN_DIR}/train/analysis" \
    "${PY}" -m analysis.report --workdir="${RUN_DIR}/train" --pooled \
    --ground_truth="${RUN_DIR}/cohort/ground_truth.json" --eligibility_dir="${RUN_DIR}/eligibility"
  stage "associations from the reports' table against the true grades -> ${graded}/associations_check.csv" \
    "${PY}" -m analysis.report_text_truth --cohort="${RUN_DIR}/cohort" --graded="${graded}" \
    --workdir="${RUN_DIR}/train" --secret_file="${key}"
  stage "model bundle (parameters, plan, bias correction, intervals) -> ${RUN_DIR}/bundle" \
    "${PY}" -m spinejax.export --workdir="${RUN_DIR}/train" --out="${RUN_DIR}/bundle"
  # The test split's scans, read from their DICOM and NIfTI files by the predict command, must get exactly
  # evaluate's predictions; the check also measures the intervals' coverage on them.
  stage "new scans: the test split's raw scans -> ${RUN_DIR}/predict_check/predicted" predict_check "${key}"
  if command -v chromium > /dev/null; then
    stage "the report in headless Chromium" \
      "${PY}" -m analysis.render_check --report="${RUN_DIR}/train/analysis/report.html"
  else
    echo "(no chromium: skipped opening the report in a headless browser; apt-get install chromium to check it)"
  fi
  echo "cohort: ${RUN_DIR}/cohort (reports.csv, reports_text.csv, dicom/, nifti/, masks/, ground_truth.json)"
  echo "pathology table read from the free-text reports: ${RUN_DIR}/cohort/report_features (reports.csv, provenance.csv, review.html, truth_check.csv)"
  echo "records: ${RUN_DIR}/records (<region>/<split>-*.array_record, index.csv, failures.csv, rejections.csv, manifest.json, qc_*.png)"
  echo "eligibility: ${RUN_DIR}/eligibility (eligibility.csv, clusters.csv, pictures, truth_check.json)"
  echo "training: ${RUN_DIR}/train (checkpoints/, metrics.jsonl, tensorboard/, config.json, run.json, summary.json)"
  echo "predictions: ${RUN_DIR}/train/predictions (<split>.csv, metrics.json)"
  echo "Grad-CAM: ${RUN_DIR}/train/gradcam (examples.png, region_shares.csv)"
  echo "report: ${RUN_DIR}/train/analysis/report.html"
  echo "model bundle: ${RUN_DIR}/bundle (bundle.json, params.npz, SHA256SUMS); new scans: spinejax-predict --model=${RUN_DIR}/bundle --input=FOLDER --out=DIR"
}

case "${1:-all}" in
  all) stage "set-up" setup; pipeline ;;
  setup) stage "set-up" setup ;;
  ablate|study)
    stage "set-up" setup
    pipeline
    # SPINEJAX_ABLATE_ONLY: a comma list of settings (analysis.ablation --only); default all of them
    stage "ablation study (data size, loss, region) -> ${RUN_DIR}/ablation" \
      "${PY}" -m analysis.ablation --run_dir="${RUN_DIR}" --only="${SPINEJAX_ABLATE_ONLY:-}" ;;
  test) stage "set-up" setup; stage "lint" .venv/bin/ruff check .; stage "tests" "${PY}" -m pytest tests ;;
  *) echo "usage: ./run.sh [test|ablate|study|setup]" >&2; exit 2 ;;
esac
