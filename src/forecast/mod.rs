//! Forecasting: seasonal forecasts with prediction intervals,
//! time-to-breach for signals with a limit, trends and capacity plans
//! (docs/FORECAST.md).
