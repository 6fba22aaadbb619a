# Exports the five mlbench data sets of the accuracy benchmark to CSV, one
# numeric column per feature and a 0/1 `label` column (1 = anomaly), with the
# anomaly classes chosen as in Liu, Ting & Zhou (2008):
#   Shuttle      class != 1 (Rad.Flow)
#   Satellite    the three smallest classes
#   Ionosphere   "bad"
#   BreastCancer "malignant" (rows with missing values dropped, Id dropped)
#   Pima         "pos"
# Usage: Rscript export_mlbench.R OUTDIR
suppressMessages(library(mlbench))
out <- commandArgs(trailingOnly = TRUE)[1]
dir.create(out, showWarnings = FALSE, recursive = TRUE)

numeric_frame <- function(df) {
  as.data.frame(lapply(df, function(col) as.numeric(as.character(col))))
}
write_set <- function(name, features, anomalous) {
  df <- numeric_frame(features)
  df$label <- as.integer(anomalous)
  write.csv(df, file.path(out, paste0(name, ".csv")), row.names = FALSE)
  cat(sprintf("%-12s %6d rows %3d features %5d anomalies\n", name, nrow(df), ncol(df) - 1, sum(df$label)))
}

data(Shuttle)
write_set("shuttle", Shuttle[, 1:9], Shuttle$Class != levels(Shuttle$Class)[1])

data(Satellite)
smallest <- names(sort(table(Satellite$classes)))[1:3]
write_set("satellite", Satellite[, 1:36], Satellite$classes %in% smallest)

data(Ionosphere)
write_set("ionosphere", Ionosphere[, 1:34], Ionosphere$Class == "bad")

data(BreastCancer)
bc <- na.omit(BreastCancer)
write_set("breastcancer", bc[, 2:10], bc$Class == "malignant")

data(PimaIndiansDiabetes)
write_set("pima", PimaIndiansDiabetes[, 1:8], PimaIndiansDiabetes$diabetes == "pos")
